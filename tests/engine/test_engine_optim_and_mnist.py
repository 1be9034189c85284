"""Optimizers step for step against torch.optim on the same gradients; the MNIST loader."""

import numpy as np
import pytest
import torch

from engine import Network, load_mnist, make_optimizer, optimizer_from_state, test_split, train_split
from engine.mnist import DATA_FILE
from engine_testkit import make_spec

SPEC = make_spec([1, 6, 6], [{"type": "conv", "filters": 3, "kernel": 3, "padding": 1, "activation": "relu"},
                             {"type": "avgpool", "size": 2}, {"type": "flatten"},
                             {"type": "dense", "units": 5, "activation": "tanh"},
                             {"type": "dense", "units": 3, "activation": "softmax"}], seed=4)

TORCH_OPTIMIZERS = {
    ("sgd", ()): lambda params, lr: torch.optim.SGD(params, lr=lr),
    ("momentum", ()): lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
    ("momentum", (("momentum", 0.5),)): lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.5),
    ("adam", ()): lambda params, lr: torch.optim.Adam(params, lr=lr),
    ("adam", (("beta1", 0.8), ("beta2", 0.99), ("eps", 1e-6))):
        lambda params, lr: torch.optim.Adam(params, lr=lr, betas=(0.8, 0.99), eps=1e-6),
}


def batch(step):
    rng = np.random.default_rng(step)
    return rng.normal(size=(4, 1, 6, 6)), rng.integers(0, 3, size=4)


@pytest.mark.parametrize("name, hyper", sorted(TORCH_OPTIMIZERS), ids=lambda v: str(v))
def test_optimizer_matches_torch_optim_for_several_steps(name, hyper):
    net = Network.from_spec(SPEC)
    learning_rate = 0.05
    optimizer = make_optimizer(name, learning_rate, **dict(hyper))
    mirrors = [torch.tensor(p[key].copy()) for p in net.params for key in sorted(p)]
    reference = TORCH_OPTIMIZERS[(name, hyper)](mirrors, learning_rate)
    for step in range(6):
        trace = net.trace(*batch(step))
        grads = [torch.tensor(record.grads[key].copy()) for record in trace.layers for key in sorted(record.grads)]
        for mirror, grad in zip(mirrors, grads):
            mirror.grad = grad
        reference.step()
        optimizer.step(net.params, trace)
        ours = [p[key] for p in net.params for key in sorted(p)]
        for mine, theirs in zip(ours, mirrors):
            np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-12, atol=1e-14, err_msg=f"step {step}")


def test_a_training_step_lowers_the_loss_on_the_same_batch():
    net = Network.from_spec(SPEC)
    x, y = batch(0)
    optimizer = make_optimizer("sgd", 0.1)
    before = net.trace(x, y)
    optimizer.step(net.params, before)
    assert net.trace(x, y).loss < before.loss


def test_optimizer_keeps_float32_parameters_float32():
    net = Network.from_spec(dict(SPEC, dtype="float32"))
    for name in ("sgd", "momentum", "adam"):
        optimizer = make_optimizer(name, 0.01)
        optimizer.step(net.params, net.trace(*batch(1)))
        assert all(v.dtype == np.float32 for p in net.params for v in p.values())


def test_optimizer_updates_the_live_arrays_in_place():
    net = Network.from_spec(SPEC)
    live = net.params[0]["W"]
    snapshot = live.copy()
    make_optimizer("adam", 0.01).step(net.params, net.trace(*batch(2)))
    assert net.params[0]["W"] is live
    assert not np.array_equal(live, snapshot)


def test_optimizer_state_round_trip_continues_identically():
    first, second = Network.from_spec(SPEC), Network.from_spec(SPEC)
    optimizer = make_optimizer("adam", 0.01)
    for step in range(3):
        trace = first.trace(*batch(step))
        optimizer.step(first.params, trace)
    second.load_state_dict(first.state_dict())
    optimizer_copy = optimizer_from_state(optimizer.state_dict())
    trace = first.trace(*batch(9))
    optimizer.step(first.params, trace)
    optimizer_copy.step(second.params, second.trace(*batch(9)))
    for p, q in zip(first.params, second.params):
        for key in p:
            np.testing.assert_array_equal(p[key], q[key])


@pytest.mark.parametrize("name, learning_rate, hyper", [
    ("rmsprop", 0.1, {}), ("sgd", 0.0, {}), ("sgd", -1.0, {}), ("sgd", float("nan"), {}),
    ("momentum", 0.1, {"momentum": 1.0}), ("adam", 0.1, {"beta1": 1.5}),
    ("adam", 0.1, {"eps": 5e-324}), ("adam", 0.1, {"eps": 0.0}),
])
def test_bad_optimizer_settings_raise_value_error(name, learning_rate, hyper):
    with pytest.raises(ValueError):
        make_optimizer(name, learning_rate, **hyper)


# --- MNIST ----------------------------------------------------------------------------------------

def test_mnist_loader_gives_floats_in_unit_range_and_int_labels():
    images, labels = load_mnist()
    assert images.shape == (10000, 1, 28, 28) and images.dtype == np.float32
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0
    assert set(np.unique(labels)) == set(range(10))
    with np.load(DATA_FILE) as raw:
        np.testing.assert_allclose(images[:, 0], raw["images"] / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(labels, raw["labels"])


def test_mnist_splits_are_the_first_9000_and_the_last_1000():
    images, labels = load_mnist()
    train_x, train_y = train_split()
    test_x, test_y = test_split()
    assert train_x.shape == (9000, 1, 28, 28) and train_y.shape == (9000,)
    assert test_x.shape == (1000, 1, 28, 28) and test_y.shape == (1000,)
    np.testing.assert_array_equal(train_x, images[:9000])
    np.testing.assert_array_equal(test_x, images[9000:])
    np.testing.assert_array_equal(np.concatenate([train_y, test_y]), labels)
    # every class appears in both splits in roughly its share
    assert np.bincount(test_y, minlength=10).min() > 50


def test_mnist_arrays_cannot_be_changed_by_a_caller():
    images, _ = load_mnist()
    with pytest.raises(ValueError):
        images[0, 0, 0, 0] = 0.5


def test_adam_with_the_smallest_allowed_eps_keeps_zero_gradient_parameters_finite():
    net = Network.from_spec(dict(SPEC, dtype="float32"))
    optimizer = make_optimizer("adam", 0.01, eps=1e-30)
    trace = net.trace(*batch(0))
    for record in trace.layers:
        for grad in record.grads.values():
            grad[...] = 0
    optimizer.step(net.params, trace)
    assert all(np.isfinite(value).all() for params in net.params for value in params.values())
