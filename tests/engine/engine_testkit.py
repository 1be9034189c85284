"""Shared helpers for the engine tests: the same network in PyTorch, central differences, specs.

The PyTorch reference is built from the engine's own ``net.params`` and the spec alone, so it
checks the engine's forward values, every delta, every weight gradient, dL/dx and the loss against
an independent autograd. Everything runs in float64 so tolerances can be tight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from engine import Network

LEAKY_SLOPE = 0.01

# DESIGN.md's LeNet-5, written out here rather than taken from engine/architectures.py, so that a
# wrong spec there fails the tests.
LENET5_LAYERS = [
    {"type": "conv", "filters": 6, "kernel": 5, "stride": 1, "padding": 2, "activation": "relu"},
    {"type": "maxpool", "size": 2, "stride": 2},
    {"type": "conv", "filters": 16, "kernel": 5, "stride": 1, "padding": 0, "activation": "relu"},
    {"type": "maxpool", "size": 2, "stride": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 120, "activation": "relu"},
    {"type": "dense", "units": 84, "activation": "relu"},
    {"type": "dense", "units": 10, "activation": "softmax"},
]


def as_pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def make_spec(input_shape, layers, loss="cross_entropy", dtype="float64", seed=0) -> dict:
    return {"input_shape": list(input_shape), "layers": layers, "loss": loss, "dtype": dtype, "seed": seed}


def layer_output_shape(shape, layer):
    """Output shape (no batch axis) of one raw spec layer, the formulas of the notes."""
    kind = layer["type"]
    if kind == "conv":
        c, h, w = shape
        kh, kw = as_pair(layer["kernel"])
        sh, sw = as_pair(layer.get("stride", 1))
        ph, pw = as_pair(layer.get("padding", 0))
        return (layer["filters"], (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
    if kind in ("maxpool", "avgpool"):
        c, h, w = shape
        kh, kw = as_pair(layer["size"])
        sh, sw = as_pair(layer.get("stride", layer["size"]))
        return (c, (h - kh) // sh + 1, (w - kw) // sw + 1)
    if kind == "flatten":
        return (int(np.prod(shape)),)
    if kind == "dense":
        return (layer["units"],)
    raise AssertionError(f"unknown layer type {kind}")


def output_shape(spec) -> tuple[int, ...]:
    shape = tuple(spec["input_shape"])
    for layer in spec["layers"]:
        shape = layer_output_shape(shape, layer)
    return shape


def random_targets(spec, batch, rng):
    """Labels or targets that suit the spec's loss, shaped as the contract says."""
    out = output_shape(spec)
    if spec["loss"] == "cross_entropy":
        return rng.integers(0, out[0], size=batch)
    if spec["loss"] == "binary_cross_entropy":
        return rng.uniform(0.05, 0.95, size=(batch,) + out)
    return rng.normal(size=(batch,) + out)


def random_input(spec, batch, rng, dtype=np.float64):
    return rng.normal(size=(batch,) + tuple(spec["input_shape"])).astype(dtype)


def activate(z: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu":
        return torch.relu(z)
    if name == "leaky_relu":
        return F.leaky_relu(z, LEAKY_SLOPE)
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "identity":
        return z
    if name == "softmax":
        return torch.softmax(z, dim=1)
    raise AssertionError(f"unknown activation {name}")


def torch_loss(a: torch.Tensor, y: np.ndarray, loss: str) -> torch.Tensor:
    """The notes' loss formulas written directly on the output activations."""
    n = a.shape[0]
    if loss == "cross_entropy":
        picked = a[torch.arange(n), torch.as_tensor(y, dtype=torch.long)]
        return -torch.log(picked).sum() / n
    target = torch.as_tensor(np.asarray(y, dtype=np.float64))
    if loss == "binary_cross_entropy":
        return -(target * torch.log(a) + (1 - target) * torch.log(1 - a)).sum() / n
    if loss == "mse":
        return 0.5 * ((a - target) ** 2).sum() / n
    raise AssertionError(f"unknown loss {loss}")


def torch_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, layer: dict) -> torch.Tensor:
    """One spec conv layer in PyTorch: padding_mode "circular" through PyTorch's own circular pad
    (what nn.Conv2d(padding_mode="circular") does), operation "convolution" as the
    cross-correlation with the kernel flipped in both spatial axes (autograd flips dW back)."""
    stride, (ph, pw) = as_pair(layer.get("stride", 1)), as_pair(layer.get("padding", 0))
    if layer.get("operation", "cross_correlation") == "convolution":
        w = torch.flip(w, dims=(2, 3))
    if layer.get("padding_mode", "zeros") == "circular":
        return F.conv2d(F.pad(x, (pw, pw, ph, ph), mode="circular"), w, b, stride=stride)
    return F.conv2d(x, w, b, stride=stride, padding=(ph, pw))


@dataclass
class TorchLayer:
    type: str
    input: torch.Tensor
    z: torch.Tensor
    a: torch.Tensor
    params: dict = field(default_factory=dict)
    argmax: torch.Tensor | None = None


@dataclass
class TorchTrace:
    loss: float
    input_grad: np.ndarray
    layers: list[TorchLayer]


def torch_trace(spec, params, x, y) -> TorchTrace:
    """Forward and backward of the spec's network in float64 PyTorch, weights taken from params."""
    inp = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    current = inp
    records = []
    for layer, layer_params in zip(spec["layers"], params):
        kind = layer["type"]
        weights = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for k, v in layer_params.items()}
        argmax = None
        if kind == "conv":
            z = torch_conv(current, weights["W"], weights["b"], layer)
            a = activate(z, layer["activation"])
        elif kind == "dense":
            z = F.linear(current, weights["W"], weights["b"])
            a = activate(z, layer["activation"])
        elif kind == "maxpool":
            size = as_pair(layer["size"])
            z, argmax = F.max_pool2d(current, size, as_pair(layer.get("stride", size)), return_indices=True)
            a = z
        elif kind == "avgpool":
            size = as_pair(layer["size"])
            z = F.avg_pool2d(current, size, as_pair(layer.get("stride", size)))
            a = z
        elif kind == "flatten":
            z = current.reshape(current.shape[0], -1)
            a = z
        else:
            raise AssertionError(kind)
        z.retain_grad()
        a.retain_grad()
        records.append(TorchLayer(kind, current, z, a, weights, argmax))
        current = a
    loss = torch_loss(current, y, spec["loss"])
    loss.backward()
    return TorchTrace(float(loss.detach()), inp.grad.numpy(), records)


def close(actual, expected, rtol=1e-7, what=""):
    """assert_allclose with an absolute floor scaled to the reference's magnitude."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 1e-2 * scale, err_msg=what)


def assert_trace_matches_torch(spec, x, y, rtol=1e-7, net=None):
    """Builds the network (float64), traces it, and compares every number with PyTorch."""
    net = net or Network.from_spec(spec)
    trace = net.trace(x, y)
    reference = torch_trace(spec, net.params, x, y)
    close(trace.loss, reference.loss, rtol, "loss")
    close(trace.input_grad, reference.input_grad, rtol, "input_grad")
    assert len(trace.layers) == len(spec["layers"])
    for i, (ours, theirs) in enumerate(zip(trace.layers, reference.layers)):
        where = f"layer {i} ({theirs.type})"
        assert ours.type == theirs.type, where
        close(ours.input, theirs.input.detach().numpy(), rtol, f"{where} input")
        close(ours.z, theirs.z.detach().numpy(), rtol, f"{where} z")
        close(ours.a, theirs.a.detach().numpy(), rtol, f"{where} a")
        close(ours.delta, theirs.z.grad.numpy(), rtol, f"{where} delta")
        if theirs.params:
            assert set(ours.grads) == {"W", "b"}, where
            close(ours.grads["W"], theirs.params["W"].grad.numpy(), rtol, f"{where} dW")
            close(ours.grads["b"], theirs.params["b"].grad.numpy(), rtol, f"{where} db")
        else:
            assert ours.grads == {}, where
        if theirs.argmax is not None:
            np.testing.assert_array_equal(ours.argmax, theirs.argmax.numpy(), err_msg=f"{where} argmax")
    return net, trace


def central_difference(loss_fn, array, eps=1e-6, max_entries=None, rng=None):
    """dL/d(array) by central differences, entry by entry (optionally on a random subset).

    Returns (flat indices checked, numeric gradient at those indices). ``array`` is perturbed in
    place and restored exactly.
    """
    flat = array.reshape(-1)
    indices = np.arange(flat.size)
    if max_entries is not None and flat.size > max_entries:
        indices = (rng or np.random.default_rng(0)).choice(flat.size, size=max_entries, replace=False)
    numeric = np.empty(len(indices))
    for k, index in enumerate(indices):
        original = flat[index]
        flat[index] = original + eps
        plus = loss_fn()
        flat[index] = original - eps
        minus = loss_fn()
        flat[index] = original
        numeric[k] = (plus - minus) / (2 * eps)
    return indices, numeric


def assert_grads_match_finite_differences(net, x, y, max_entries=None, rtol=1e-5, atol=1e-8):
    """Every dW, db and dL/dx of a trace against central differences of the trace's loss.

    Biases are first set to random non-zero values: with zero biases a unit fed only by dead relus
    sits exactly on relu's kink, where a central difference sees half the slope.
    """
    assert net.dtype == np.float64
    bias_rng = np.random.default_rng(2)
    for layer_params in net.params:
        if "b" in layer_params:
            layer_params["b"][...] = bias_rng.normal(0.0, 0.5, size=layer_params["b"].shape)
    trace = net.trace(x, y)
    loss = lambda: net.trace(x, y).loss  # noqa: E731
    rng = np.random.default_rng(1)
    checks = [("input_grad", x, trace.input_grad)]
    for i, (layer_params, record) in enumerate(zip(net.params, trace.layers)):
        for key in ("W", "b"):
            if key in layer_params:
                checks.append((f"layer {i} d{key}", layer_params[key], record.grads[key]))
    for what, array, analytic in checks:
        indices, numeric = central_difference(loss, array, max_entries=max_entries, rng=rng)
        np.testing.assert_allclose(analytic.reshape(-1)[indices], numeric, rtol=rtol, atol=atol, err_msg=what)


def mentions_layer(message: str, index: int) -> bool:
    """True when an error message names layer ``index`` ("layer 2", "layers[2]", "layer #2")."""
    return re.search(rf"layers?\s*[\[#]?\s*{index}\b", message, re.IGNORECASE) is not None
