"""Real training: LeNet-5 trained by the engine on the 9,000-digit split reaches 97% on the
1,000-digit test split, through scripts/train_lenet.py's own training loop."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from engine import Network, make_optimizer, test_split, train_split

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_lenet.py"


def load_script():
    spec = importlib.util.spec_from_file_location("train_lenet_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_lenet5_reaches_97_percent_test_accuracy_on_the_9000_digit_split():
    lines = []
    accuracies = load_script().train(epochs=6, batch_size=32, optimizer_name="adam", learning_rate=2e-3, seed=0,
                                     decay=0.7, log=lines.append)
    report = "\n".join(lines)
    assert len(accuracies) == 6, report
    assert accuracies[-1] >= 0.97, report
    assert accuracies[-1] > accuracies[0] - 0.01, report


def test_a_few_hundred_sgd_steps_already_beat_chance_by_far():
    """A quick check of the whole loop (trace, optimizer, forward) on real digits."""
    train_x, train_y = train_split()
    test_x, test_y = test_split()
    script = load_script()
    net = Network.from_spec(script.LENET5)
    optimizer = make_optimizer("momentum", 0.02)
    rng = np.random.default_rng(0)
    assert script.accuracy(net, test_x[:500], test_y[:500]) < 0.3
    for _ in range(150):
        batch = rng.choice(len(train_x), size=32, replace=False)
        optimizer.step(net.params, net.trace(train_x[batch], train_y[batch]))
    assert script.accuracy(net, test_x[:500], test_y[:500]) > 0.8
