"""Losses, averaged over the batch, and the delta they start backpropagation with.

Each loss is computed from the output pre-activation z where a log is involved, so that a
saturated softmax or sigmoid (a == 0 or 1 in floating point) still gives a finite loss.
"""

from __future__ import annotations

import numpy as np

from .activations import backprop, log_softmax, softplus


def sample_losses(loss: str, z: np.ndarray, a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each sample's own loss, shape (N,): z, a are (N, K); y is (N,) int labels for
    cross_entropy, else (N, K). The batch loss L is their mean."""
    n = z.shape[0]
    if loss == "cross_entropy":
        # L_n = -log a[n, y_n], with log a = log_softmax(z)
        return -log_softmax(z)[np.arange(n), y]
    if loss == "binary_cross_entropy":
        # log a = -softplus(-z), log(1 - a) = -softplus(z) for a = sigmoid(z)
        return (y * softplus(-z) + (1 - y) * softplus(z)).sum(axis=1)
    if loss == "mse":
        return 0.5 * ((a - y) ** 2).sum(axis=1)
    raise ValueError(f"unknown loss {loss!r}")


def batch_mean(losses: np.ndarray) -> float:
    """L = (1/N) sum_n L_n, from ``sample_losses``."""
    return float(losses.sum() / losses.shape[0])


def loss_value(loss: str, z: np.ndarray, a: np.ndarray, y: np.ndarray) -> float:
    """L for the batch (arguments as for ``sample_losses``)."""
    return batch_mean(sample_losses(loss, z, a, y))


def output_delta(loss: str, activation: str, z: np.ndarray, a: np.ndarray, y: np.ndarray,
                 batch_size: int | None = None):
    """(delta = dL/dz, grad_a = dL/da or None) at the output layer.

    softmax + cross_entropy and sigmoid + binary_cross_entropy give the delta a - y directly (the
    activation's derivative cancels the log's); grad_a is None there because dL/da divides by
    a(1 - a) and is not finite once the output saturates (`forms_output_grad_a`).
    ``batch_size``: the N of the batch mean when z, a, y are one block of its rows (default: their
    own number of rows); every row's values are then those of the whole batch's.
    """
    n = z.shape[0] if batch_size is None else batch_size
    if loss == "cross_entropy":
        target = np.zeros_like(a)
        target[np.arange(z.shape[0]), y] = 1
        return (a - target) / a.dtype.type(n), None
    if loss == "binary_cross_entropy":
        return (a - y) / a.dtype.type(n), None
    if loss == "mse":
        grad_a = (a - y) / a.dtype.type(n)
        return backprop(activation, grad_a, z, a), grad_a
    raise ValueError(f"unknown loss {loss!r}")


def forms_output_grad_a(loss: str) -> bool:
    """Whether output_delta gives a grad_a (dL/da) for this loss, rather than None."""
    return loss not in ("cross_entropy", "binary_cross_entropy")
