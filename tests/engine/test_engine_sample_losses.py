"""Trace.sample_losses: each sample's own loss, checked against PyTorch's built-in losses with
reduction='none' (float64); the batch loss is their mean; finite when the output saturates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine import Network
from engine.losses import sample_losses
from engine_testkit import make_spec, random_input, random_targets, torch_trace

CASES = [
    ("cross_entropy", "softmax", 10),
    ("binary_cross_entropy", "sigmoid", 1),
    ("binary_cross_entropy", "sigmoid", 4),
    ("mse", "identity", 3),
    ("mse", "tanh", 5),
]


def _spec(loss, activation, units, dtype="float64"):
    layers = [{"type": "conv", "filters": 2, "kernel": 3, "activation": "relu"},
              {"type": "maxpool", "size": 2},
              {"type": "flatten"},
              {"type": "dense", "units": units, "activation": activation}]
    return make_spec((1, 8, 8), layers, loss=loss, dtype=dtype, seed=5)


def _pytorch_sample_losses(loss: str, z: torch.Tensor, a: torch.Tensor, y) -> np.ndarray:
    """PyTorch's own losses, unreduced; summed over the outputs where the engine's per-sample loss
    sums over k (binary cross-entropy, and mse with its 1/2)."""
    if loss == "cross_entropy":
        return F.cross_entropy(z, torch.as_tensor(y), reduction="none").numpy()
    target = torch.as_tensor(np.asarray(y, dtype=np.float64))
    if loss == "binary_cross_entropy":
        return F.binary_cross_entropy_with_logits(z, target, reduction="none").sum(1).numpy()
    return (0.5 * F.mse_loss(a, target, reduction="none").sum(1)).numpy()


@pytest.mark.parametrize("loss, activation, units", CASES)
def test_sample_losses_match_pytorch_unreduced_losses(loss, activation, units):
    spec = _spec(loss, activation, units)
    rng = np.random.default_rng(0)
    x, y = random_input(spec, 7, rng), random_targets(spec, 7, rng)
    net = Network.from_spec(spec)
    trace = net.trace(x, y)
    reference = torch_trace(spec, net.params, x, y).layers[-1]
    expected = _pytorch_sample_losses(loss, reference.z.detach(), reference.a.detach(), y)
    assert trace.sample_losses.shape == (7,) and trace.sample_losses.dtype == np.float64
    np.testing.assert_allclose(trace.sample_losses, expected, rtol=1e-10, atol=1e-12)
    assert trace.loss == pytest.approx(expected.mean(), rel=1e-10)
    assert trace.loss == pytest.approx(float(trace.sample_losses.mean()), rel=1e-12)


@pytest.mark.parametrize("loss, activation, units", CASES)
def test_each_sample_loss_is_that_sample_traced_alone(loss, activation, units):
    spec = _spec(loss, activation, units, dtype="float32")
    rng = np.random.default_rng(1)
    x, y = random_input(spec, 5, rng, np.float32), random_targets(spec, 5, rng)
    net = Network.from_spec(spec)
    batch = net.trace(x, y).sample_losses
    assert batch.dtype == np.float32
    alone = [net.trace(x[i:i + 1], y[i:i + 1]).loss for i in range(5)]
    np.testing.assert_allclose(batch, alone, rtol=1e-5)


def test_sample_losses_stay_finite_when_the_output_saturates():
    z = np.array([[1000.0, -1000.0, 0.0], [-800.0, 800.0, 0.0]])
    a = np.exp(z - z.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    losses = sample_losses("cross_entropy", z, a, np.array([1, 1]))
    np.testing.assert_allclose(losses, [2000.0, 0.0], atol=1e-9)
    sigmoid = 1 / (1 + np.exp(-np.clip(z, -500, 500)))
    bce = sample_losses("binary_cross_entropy", z, sigmoid, np.zeros_like(z))
    assert np.isfinite(bce).all() and bce[0] == pytest.approx(1000.0 + np.log(2))
