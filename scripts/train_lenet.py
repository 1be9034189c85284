"""Train LeNet-5 with the NumPy engine on the shipped MNIST digits and report test accuracy.

Trains on the first 9,000 digits (engine.train_split) and, after every epoch, prints the accuracy
on the last 1,000 (engine.test_split), which training never sees, with the time taken so far.
Every step is one `net.trace` on a mini-batch followed by an optimizer step on its gradients:
the same code path the visualiser shows one iteration of.

    python scripts/train_lenet.py                  # Adam, lr 2e-3 x0.7 per epoch, batch 32, 6 epochs
    python scripts/train_lenet.py --epochs 2 --optimizer momentum --learning-rate 0.01

Exits non-zero if the final test accuracy is below --target (default 0.97).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# One BLAS thread, as the server runs (app/__init__.py): the engine's products are small, and on a
# busy 2-core machine OpenBLAS's spinning workers made training several times slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import Network, make_optimizer, test_split, train_split  # noqa: E402
from engine.architectures import lenet5  # noqa: E402

LENET5 = lenet5(dtype="float32")


def accuracy(net: Network, images: np.ndarray, labels: np.ndarray, chunk: int = 500) -> float:
    correct = 0
    for start in range(0, len(images), chunk):
        predicted = net.forward(images[start: start + chunk]).argmax(axis=1)
        correct += int((predicted == labels[start: start + chunk]).sum())
    return correct / len(images)


def train(epochs: int, batch_size: int, optimizer_name: str, learning_rate: float, seed: int,
          decay: float = 0.7, log=print) -> list[float]:
    """Returns the test accuracy after each epoch. The learning rate is multiplied by `decay` after
    every epoch: with a constant rate the test accuracy of the later epochs swings by a point or two
    from one epoch to the next; the decayed steps settle it."""
    train_x, train_y = train_split()
    test_x, test_y = test_split()
    net = Network.from_spec(dict(LENET5, seed=seed))
    optimizer = make_optimizer(optimizer_name, learning_rate)
    rng = np.random.default_rng(seed)
    log(f"LeNet-5, {net.num_parameters:,} parameters, {len(train_x)} training digits, {len(test_x)} test digits; "
        f"{optimizer_name} lr {learning_rate} (x{decay} per epoch), batch {batch_size}, {epochs} epochs, seed {seed}")
    start = time.perf_counter()
    accuracies = []
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(train_x))
        losses = []
        for first in range(0, len(order), batch_size):
            batch = order[first: first + batch_size]
            trace = net.trace(train_x[batch], train_y[batch])
            optimizer.step(net.params, trace)
            losses.append(trace.loss)
        optimizer.learning_rate *= decay
        accuracies.append(accuracy(net, test_x, test_y))
        log(f"epoch {epoch}: mean training loss {np.mean(losses):.4f}, "
            f"test accuracy {accuracies[-1]:.2%} ({round(accuracies[-1] * len(test_x))}/{len(test_x)}), "
            f"{time.perf_counter() - start:.1f} s so far")
    log(f"final test accuracy {accuracies[-1]:.2%} after {epochs} epochs in {time.perf_counter() - start:.1f} s")
    return accuracies


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], default="adam")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--decay", type=float, default=0.7, help="learning-rate factor after each epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=0.97)
    args = parser.parse_args(argv)
    accuracies = train(args.epochs, args.batch_size, args.optimizer, args.learning_rate, args.seed, args.decay)
    return 0 if accuracies[-1] >= args.target else 1


if __name__ == "__main__":
    raise SystemExit(main())
