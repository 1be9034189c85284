"""Thin layer classes over the kernels.

A layer holds no weights of its own: the network passes it its entry of `net.params`, so that the
live arrays a caller writes into are the ones every forward and backward reads. `forward` returns
(z, a, argmax, cache); `backward` takes delta = dL/dz and returns (dL/d input, grads); with
need_dx=False it skips dL/d input (returned as None): the first layer of a trace nobody reads it from.

For a trace done in blocks of the batch (network.py), `outputs(x, N)` gives the whole batch's
(z, a, argmax) arrays, `forward_block` writes one block's rows of them and returns its cache, and
`backward(..., dx_out=)` / `delta_from_grad_a(..., out=)` write into the block's rows of the
whole batch's dL/d input and delta. A layer that only reshapes (`reshapes_only`) does no work per
block: its arrays are views of its neighbours'.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .activations import activate, activate_into, backprop_into
from .scratch import SCRATCH, fresh


class Layer:
    type = ""
    has_params = False
    reshapes_only = False

    def __init__(self, spec: dict, input_shape: tuple, output_shape: tuple, slot=None):
        self.spec = spec
        self.input_shape = input_shape
        self.output_shape = output_shape
        self.activation = spec.get("activation")
        # temporaries come from per-thread scratch memory keyed by the layer's position (slot)
        self.scratch = SCRATCH.taker(slot) if slot is not None else fresh

    def init_params(self, rng: np.random.Generator, dtype) -> dict:
        return {}

    def outputs(self, x: np.ndarray, N: int, new=None, activated: bool = True) -> tuple:
        """(z, a, argmax) arrays for N samples whose input is x: a is z where the layer has no
        activation (or the identity), or where it is not applied here (``activated=False``: a lean
        trace's max-pool above applies it, Network._relu_in_pool), argmax None but for
        max-pooling. ``new(role, shape, dtype)`` makes each array ("z", "a", "argmax"; default
        ``fresh``: a new empty one)."""
        new = new or fresh
        shape = (N,) + tuple(self.output_shape)
        z = new("z", shape, x.dtype)
        applied_here = activated and self.activation not in (None, "identity")
        return z, (new("a", shape, x.dtype) if applied_here else z), None

    def delta_from_grad_a(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray, out=None) -> np.ndarray:
        """delta = dL/dz from dL/da: times g'(z) where there is an activation, else the same;
        written into out when given."""
        if self.activation is None:
            if out is not None and out is not grad_a:
                np.copyto(out, grad_a)
                return out
            return grad_a
        delta = np.empty_like(grad_a) if out is None else out

        def chunk(n0, n1):
            backprop_into(self.activation, grad_a[n0:n1], z[n0:n1], a[n0:n1], delta[n0:n1])

        kernels.over_batch(chunk, grad_a.shape[0], grad_a[:1].nbytes)
        return delta


def _init_weights(rng, shape, fan_in, fan_out, activation, dtype):
    """He normal for relu-like activations, Xavier (Glorot) normal otherwise."""
    if activation in ("relu", "leaky_relu"):
        std = np.sqrt(2.0 / fan_in)
    else:
        std = np.sqrt(2.0 / (fan_in + fan_out))
    return (rng.standard_normal(shape) * std).astype(dtype)


def circular_pad(x: np.ndarray, padding) -> np.ndarray:
    """x (N, C, H, W) padded by wrapping around (PyTorch's padding_mode="circular"): the ph rows
    above are the last ph rows, the ph below the first ph, and likewise for columns. ph <= H."""
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode="wrap")


def circular_fold(dx_pad: np.ndarray, padding) -> np.ndarray:
    """The backward of circular_pad: each padded cell's gradient is added to the input cell it
    copies. dx_pad (N, C, H + 2*ph, W + 2*pw) -> dx (N, C, H, W)."""
    ph, pw = padding
    H, W = dx_pad.shape[2] - 2 * ph, dx_pad.shape[3] - 2 * pw
    rows = dx_pad[:, :, ph: ph + H].copy()
    if ph:
        rows[:, :, H - ph:] += dx_pad[:, :, :ph]       # the rows copied above came from the bottom
        rows[:, :, :ph] += dx_pad[:, :, ph + H:]       # and those below from the top
    dx = rows[:, :, :, pw: pw + W].copy()
    if pw:
        dx[:, :, :, W - pw:] += rows[:, :, :, :pw]
        dx[:, :, :, :pw] += rows[:, :, :, pw + W:]
    return dx


def rotate180(w: np.ndarray) -> np.ndarray:
    """w (F, C, HH, WW) turned by 180 degrees in its two spatial axes (a view)."""
    return w[:, :, ::-1, ::-1]


class Conv(Layer):
    """Cross-correlation (default) or the true convolution, with zero or circular padding, as
    wrappers over the one cross-correlation kernel:

    - circular: the input is wrap-padded here and the kernel runs with padding 0; the kernel's dx
      for the padded input is folded back onto the cells each padded cell copies.
    - convolution: z = b + sum x_pad[i*s + r, j*s + q] * W[HH-1-r, WW-1-q], which is the
      cross-correlation with rot180(W); so the kernel runs with rot180(W), its dx is already right,
      and the dW it gives is for rot180(W), so it is turned back.
    """

    type = "conv"
    has_params = True

    def __init__(self, spec, input_shape, output_shape, slot=None):
        super().__init__(spec, input_shape, output_shape, slot)
        self.circular = spec.get("padding_mode", "zeros") == "circular"
        self.rotated = spec.get("operation", "cross_correlation") == "convolution"
        # the padding the kernel itself applies (zeros); circular padding is done before it
        self.kernel_padding = (0, 0) if self.circular else tuple(spec["padding"])

    def init_params(self, rng, dtype):
        F, (HH, WW), C = self.spec["filters"], self.spec["kernel"], self.input_shape[0]
        w = _init_weights(rng, (F, C, HH, WW), C * HH * WW, F * HH * WW, self.activation, dtype)
        return {"W": w, "b": np.zeros(F, dtype=dtype)}

    def _kernel_weights(self, w: np.ndarray) -> np.ndarray:
        return rotate180(w) if self.rotated else w

    def forward(self, x, params, keep=True):
        x_in = circular_pad(x, self.spec["padding"]) if self.circular else x
        z, cols = kernels.conv_forward(x_in, self._kernel_weights(params["W"]), params["b"],
                                       self.spec["stride"], self.kernel_padding, return_cols=True,
                                       scratch=self.scratch)
        return z, activate(self.activation, z), None, ((x_in, cols) if keep else None)

    def forward_block(self, x, params, out, keep_cols=False):
        # the im2col matrix (scratch) is kept only when asked: when the block's backward runs before
        # this thread takes the same scratch for another block's forward
        z, a, _ = out
        x_in = circular_pad(x, self.spec["padding"]) if self.circular else x
        _, cols = kernels.conv_forward(x_in, self._kernel_weights(params["W"]), params["b"], self.spec["stride"],
                                       self.kernel_padding, return_cols=True, scratch=self.scratch, z_out=z)
        if a is not z:
            activate_into(self.activation, z, a)
        return x_in, (cols if keep_cols else None)

    def backward(self, delta, cache, params, need_dx=True, dx_out=None):
        x_in, cols = cache
        dx, dw, db = kernels.conv_backward(delta, x_in, self._kernel_weights(params["W"]),
                                           self.spec["stride"], self.kernel_padding, cols=cols,
                                           need_dx=need_dx, scratch=self.scratch,
                                           dx_out=None if self.circular else dx_out)
        if self.circular and need_dx:
            dx = circular_fold(dx, self.spec["padding"])
            if dx_out is not None:
                np.copyto(dx_out, dx)
                dx = dx_out
        if self.rotated:
            dw = np.ascontiguousarray(rotate180(dw))
        return dx, {"W": dw, "b": db}


class MaxPool(Layer):
    type = "maxpool"

    def forward(self, x, params, keep=True):
        out, argmax = kernels.maxpool_forward(x, self.spec["size"], self.spec["stride"], self.scratch)
        return out, out, argmax, (x.shape, argmax)

    def outputs(self, x, N, new=None, activated=True):
        new = new or fresh
        out = new("z", (N,) + tuple(self.output_shape), x.dtype)
        return out, out, new("argmax", out.shape, kernels.WINNER_DTYPE)

    def forward_block(self, x, params, out, keep_cols=False):
        z, _, argmax = out
        kernels.maxpool_forward(x, self.spec["size"], self.spec["stride"], self.scratch, out=z, argmax_out=argmax)
        return x.shape, argmax

    def backward(self, delta, cache, params, need_dx=True, dx_out=None):
        if not need_dx:
            return None, {}
        x_shape, argmax = cache
        return kernels.maxpool_backward(delta, argmax, x_shape, self.scratch, size=self.spec["size"],
                                        stride=self.spec["stride"], dx_out=dx_out), {}


class AvgPool(Layer):
    type = "avgpool"

    def forward(self, x, params, keep=True):
        out = kernels.avgpool_forward(x, self.spec["size"], self.spec["stride"])
        return out, out, None, x.shape

    def forward_block(self, x, params, out, keep_cols=False):
        np.copyto(out[0], kernels.avgpool_forward(x, self.spec["size"], self.spec["stride"]))
        return x.shape

    def backward(self, delta, cache, params, need_dx=True, dx_out=None):
        if not need_dx:
            return None, {}
        dx = kernels.avgpool_backward(delta, cache, self.spec["size"], self.spec["stride"])
        if dx_out is not None:
            np.copyto(dx_out, dx)
            dx = dx_out
        return dx, {}


class Flatten(Layer):
    type = "flatten"
    reshapes_only = True

    def forward(self, x, params, keep=True):
        out = x.reshape(x.shape[0], -1)  # C, H, W order
        return out, out, None, x.shape

    def outputs(self, x, N, new=None, activated=True):
        out = x.reshape(N, -1)  # a view of its input: nothing to make
        return out, out, None

    def backward(self, delta, cache, params, need_dx=True):
        return (delta.reshape(cache) if need_dx else None), {}


class Dense(Layer):
    type = "dense"
    has_params = True

    def init_params(self, rng, dtype):
        units, fan_in = self.spec["units"], self.input_shape[0]
        w = _init_weights(rng, (units, fan_in), fan_in, units, self.activation, dtype)
        return {"W": w, "b": np.zeros(units, dtype=dtype)}

    def forward(self, x, params, keep=True):
        z = x @ params["W"].T  # nk,uk->nu
        z += params["b"]
        return z, activate(self.activation, z), None, (x if keep else None)

    def forward_block(self, x, params, out, keep_cols=False):
        z, a, _ = out
        np.matmul(x, params["W"].T, out=z)
        z += params["b"]
        if a is not z:
            activate_into(self.activation, z, a)
        return x

    def backward(self, delta, cache, params, need_dx=True, dx_out=None, need_grads=True):
        x = cache
        dx = None
        if need_dx:
            dx = delta @ params["W"] if dx_out is None else np.matmul(delta, params["W"], out=dx_out)
        return dx, (self.grads(delta, x) if need_grads else None)

    @staticmethod
    def grads(delta, x) -> dict:
        """{"W": dL/dW, "b": dL/db} from the layer's delta and input (any rows of the batch: a trace
        in blocks makes them once from the whole batch's, one product instead of one per block)."""
        return {"W": kernels.dense_weight_grad(delta, x), "b": delta.sum(axis=0)}


LAYER_CLASSES = {cls.type: cls for cls in (Conv, MaxPool, AvgPool, Flatten, Dense)}
