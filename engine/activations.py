"""Activations g(z) and their derivatives g'(z), computed stably for any finite input.

Softmax has no element-wise derivative: it only ever ends a network trained with cross-entropy,
where the loss forms the output delta a - onehot(y) directly (see losses.py).
"""

from __future__ import annotations

import numpy as np

LEAKY_SLOPE = 0.01


def sigmoid(z: np.ndarray) -> np.ndarray:
    # exp(-|z|) never overflows; the two branches are the same function.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the max so exp never overflows."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + exp(z)) without overflow."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def activate(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0)
    if name == "leaky_relu":
        return np.where(z > 0, z, z * z.dtype.type(LEAKY_SLOPE))
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "identity":
        return z
    if name == "softmax":
        return softmax(z)
    raise ValueError(f"unknown activation {name!r}")


def activate_into(name: str, z: np.ndarray, out: np.ndarray) -> None:
    """out[...] = activate(name, z), without a temporary where NumPy allows (relu, identity)."""
    if name == "relu":
        np.maximum(z, 0, out=out)
    elif name == "identity":
        np.copyto(out, z)
    else:
        out[...] = activate(name, z)


def backprop(name: str, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    """delta = grad_a * g'(z), computed into one new array (the trace keeps both).

    g'(z) from the already computed a = g(z) where that is cheaper: sigmoid' = a(1 - a),
    tanh' = 1 - a^2. At z = 0, relu' is taken as 0 and leaky_relu' as the slope (PyTorch's
    convention).
    """
    if name == "relu":
        return np.multiply(grad_a, z > 0)
    if name == "identity":
        return grad_a.copy()
    if name == "leaky_relu":
        return np.where(z > 0, grad_a, grad_a * z.dtype.type(LEAKY_SLOPE))
    if name == "sigmoid":
        delta = np.subtract(1, a)
        delta *= a
    elif name == "tanh":
        delta = np.multiply(a, a)
        np.subtract(1, delta, out=delta)
    else:
        raise ValueError(f"activation {name!r} has no element-wise derivative")
    delta *= grad_a
    return delta


def backprop_into(name: str, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray, out: np.ndarray) -> None:
    """out[...] = backprop(name, grad_a, z, a), without the full-size temporaries where NumPy allows."""
    if name == "relu":
        np.multiply(grad_a, z > 0, out=out)
    elif name == "identity":
        np.copyto(out, grad_a)
    else:
        out[...] = backprop(name, grad_a, z, a)
