"""A network is a list of layers: forward loops through them, backward loops back.

`Network.trace` keeps every intermediate of one forward and backward pass (the visualiser's raw
material) and changes nothing; optimizers (optim.py) apply a trace's gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .layers import LAYER_CLASSES, Layer
from .losses import loss_value, output_delta
from .scratch import SCRATCH, on_one_blas_thread
from .spec import normalize_spec

# A trace keeps several arrays per layer per sample; refuse a batch whose trace alone would need
# more than this, rather than exhausting the machine.
MAX_TRACE_BYTES = 4 * 2**30


@dataclass
class LayerTrace:
    """Everything one layer did in one forward + backward pass (shapes keep the batch axis)."""

    index: int
    name: str
    type: str
    spec: dict
    input: np.ndarray            # a^(l-1)
    z: np.ndarray                # pre-activation; for pool/flatten the output itself
    a: np.ndarray                # output after the activation
    delta: np.ndarray = None     # dL/dz (pool/flatten: dL/d output)
    grad_a: np.ndarray | None = None  # dL/da; None on a softmax/sigmoid output fused with its loss
    grads: dict = field(default_factory=dict)   # {"W": dL/dW, "b": dL/db} or {}
    params: dict = field(default_factory=dict)  # copy of {"W", "b"} when the trace was made, or {}
    argmax: np.ndarray | None = None  # maxpool: flat index row*W_in + col of each window's winner


@dataclass
class Trace:
    loss: float
    input_grad: np.ndarray       # dL/dx, shape of x
    layers: list[LayerTrace]
    x: np.ndarray
    y: np.ndarray

    @property
    def output(self) -> np.ndarray:
        return self.layers[-1].a


class Network:
    def __init__(self, spec: Any):
        self.spec, self.layer_shapes = normalize_spec(spec)
        self.dtype = np.dtype(self.spec["dtype"])
        self.loss = self.spec["loss"]
        self.input_shape = tuple(self.spec["input_shape"])
        self.output_size = self.layer_shapes[-1][1][0]
        self.layers: list[Layer] = []
        self.names: list[str] = []
        counts: dict[str, int] = {}
        for index, (layer_spec, (in_shape, out_shape)) in enumerate(zip(self.spec["layers"], self.layer_shapes)):
            kind = layer_spec["type"]
            counts[kind] = counts.get(kind, 0) + 1
            self.names.append(f"{kind}{counts[kind]}")
            self.layers.append(LAYER_CLASSES[kind](layer_spec, in_shape, out_shape, slot=index))
        self._activations_per_sample = sum(int(np.prod(s[1])) for s in self.layer_shapes)
        # the largest im2col matrix (and its gradient) a conv layer builds per sample
        self._window_values_per_sample = max(
            (in_shape[0] * layer_spec["kernel"][0] * layer_spec["kernel"][1] * out_shape[1] * out_shape[2]
             for layer_spec, (in_shape, out_shape) in zip(self.spec["layers"], self.layer_shapes)
             if layer_spec["type"] == "conv"), default=0)
        rng = np.random.default_rng(self.spec["seed"])
        self.params: list[dict] = [layer.init_params(rng, self.dtype) for layer in self.layers]

    @classmethod
    def from_spec(cls, spec: Any) -> "Network":
        return cls(spec)

    @property
    def num_parameters(self) -> int:
        return sum(p.size for layer_params in self.params for p in layer_params.values())

    # --- input checks ----------------------------------------------------------------------------

    def check_input(self, x: Any) -> np.ndarray:
        """x as an array of the network's dtype, or ValueError saying what was expected."""
        expected = f"(N, {', '.join(str(d) for d in self.input_shape)})"
        try:
            x = np.asarray(x)
        except ValueError as error:  # ragged nested lists
            raise ValueError(f"input must be a numeric array of shape {expected}: {error}") from None
        if x.dtype.kind not in "iuf":
            raise ValueError(f"input must be a numeric array of shape {expected}, got dtype {x.dtype}")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"input must have shape {expected}, got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"input must have shape {expected} with N >= 1, got an empty batch")
        per_sample = 4 * self._activations_per_sample + 2 * self._window_values_per_sample
        trace_bytes = x.shape[0] * per_sample * self.dtype.itemsize
        if trace_bytes > MAX_TRACE_BYTES:
            raise ValueError(f"a batch of {x.shape[0]} would need about {trace_bytes / 2**30:.1f} GiB "
                             f"to trace, more than the limit of {MAX_TRACE_BYTES / 2**30:.0f} GiB")
        x = x.astype(self.dtype, copy=False)
        if not np.isfinite(x).all():
            raise ValueError("input contains NaN or infinite values")
        return x

    def check_target(self, y: Any, n: int) -> np.ndarray:
        """y as labels (N,) for cross_entropy or targets (N, K) otherwise, or ValueError."""
        k = self.output_size
        y = np.asarray(y)
        if self.loss == "cross_entropy":
            if y.dtype.kind not in "iu":
                raise ValueError(f"labels for cross_entropy must be integers, got dtype {y.dtype}")
            if y.shape != (n,):
                raise ValueError(f"labels must have shape ({n},), got {tuple(y.shape)}")
            if y.size and (y.min() < 0 or y.max() >= k):
                raise ValueError(f"labels must be in 0..{k - 1} for {k} output units, "
                                 f"got values from {y.min()} to {y.max()}")
            return y.astype(np.int64, copy=False)
        if y.dtype.kind not in "iuf" or y.dtype.kind == "b":
            raise ValueError(f"targets for {self.loss} must be numbers, got dtype {y.dtype}")
        if y.shape != (n, k):
            raise ValueError(f"targets for {self.loss} must have shape ({n}, {k}), got {tuple(y.shape)}")
        y = y.astype(self.dtype, copy=False)
        if not np.isfinite(y).all():
            raise ValueError("targets contain NaN or infinite values")
        if self.loss == "binary_cross_entropy" and (y.min() < 0 or y.max() > 1):
            raise ValueError("targets for binary_cross_entropy must be in [0, 1]")
        return y

    # --- passes ----------------------------------------------------------------------------------

    @on_one_blas_thread
    def forward(self, x: Any) -> np.ndarray:
        """The last layer's output a for x (N, C, H, W)."""
        a = self.check_input(x)
        for layer, params in zip(self.layers, self.params):
            _, a, _, _ = layer.forward(a, params, keep=False)
        SCRATCH.trim()
        return a

    predict = forward

    @on_one_blas_thread
    def batch_loss(self, x: Any, y: Any) -> float:
        """The batch loss of (x, y) from a forward pass only (no backward, nothing kept)."""
        a = self.check_input(x)
        y = self.check_target(y, a.shape[0])
        for layer, params in zip(self.layers, self.params):
            z, a, _, _ = layer.forward(a, params, keep=False)
        SCRATCH.trim()
        return loss_value(self.loss, z, a, y)

    @on_one_blas_thread
    def trace(self, x: Any, y: Any) -> Trace:
        """Forward and backward on (x, y), keeping every intermediate; updates nothing."""
        given_x, given_y = x, y
        x = self.check_input(x)
        y = self.check_target(y, x.shape[0])
        # The trace keeps x and y: it must not change when the caller later writes into theirs.
        if isinstance(given_x, np.ndarray) and np.may_share_memory(x, given_x):
            x = x.copy()
        if isinstance(given_y, np.ndarray) and np.may_share_memory(y, given_y):
            y = y.copy()

        records: list[LayerTrace] = []
        caches = []
        a = x
        for index, (layer, params) in enumerate(zip(self.layers, self.params)):
            z, out, argmax, cache = layer.forward(a, params)
            records.append(LayerTrace(
                index=index, name=self.names[index], type=layer.type, spec=layer.spec,
                input=a, z=z, a=out, argmax=argmax,
                params={key: value.copy() for key, value in params.items()}))
            caches.append(cache)
            a = out

        last = records[-1]
        loss = loss_value(self.loss, last.z, last.a, y)
        delta, grad_a = output_delta(self.loss, self.layers[-1].activation or "identity",
                                     last.z, last.a, y)
        upstream = None
        for index in reversed(range(len(self.layers))):
            layer, record = self.layers[index], records[index]
            if upstream is not None:
                grad_a = upstream
                delta = layer.delta_from_grad_a(grad_a, record.z, record.a)
            record.delta, record.grad_a = delta, grad_a
            upstream, record.grads = layer.backward(delta, caches[index], self.params[index])
            caches[index] = None  # free the im2col matrix as soon as it is used
        SCRATCH.trim()

        return Trace(loss=loss, input_grad=upstream, layers=records, x=x, y=y)

    # --- weights ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"{i}.{key}": value.copy() for i, params in enumerate(self.params)
                for key, value in params.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy weights into the live arrays; every key must be present with the right shape."""
        expected = {f"{i}.{key}": value for i, params in enumerate(self.params)
                    for key, value in params.items()}
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise ValueError(f"state does not fit the network: missing {missing}, unexpected {extra}")
        for key, target in expected.items():
            value = np.asarray(state[key])
            if value.shape != target.shape:
                raise ValueError(f"state '{key}' has shape {value.shape}, the network needs {target.shape}")
            if not np.isfinite(value).all():
                raise ValueError(f"state '{key}' contains NaN or infinite values")
        for key, target in expected.items():
            target[...] = state[key]
