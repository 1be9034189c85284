"""A network is a list of layers: forward loops through them, backward loops back.

`Network.trace` keeps every intermediate of one forward and backward pass (the visualiser's raw
material) and changes nothing; optimizers (optim.py) apply a trace's gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .activations import activate_into
from .layers import LAYER_CLASSES, Layer
from .losses import batch_mean, forms_output_grad_a, loss_value, output_delta, sample_losses
from .scratch import SCRATCH, kernel_threads, on_calling_thread_only, on_one_blas_thread, over_threads
from .spec import layer_names, normalize_spec

# A trace keeps several arrays per layer per sample; refuse a batch whose trace alone would need
# more than this, rather than exhausting the machine.
MAX_TRACE_BYTES = 4 * 2**30

EDIT_KEYS = {"layer", "param", "index", "value"}

# A trace runs in blocks of the batch, each block forward through every layer and straight back,
# writing its rows of the whole batch's arrays (`_trace_in_blocks`): so that a block's intermediates
# are still in cache when its backward reads them, and to deal a batch over threads.
# On one thread, a batch with more than this many bytes of the largest layer output goes in blocks of
# at most this much: LeNet-5 in float32 (18.8 kB of conv1 output a sample) at batch 256 in four
# blocks of 64 (blocks of 32 and of 128 measured slower: more Python work per sample, more cache
# misses).
BLOCK_BYTES = 3 * 2**19
# With more than one thread, a batch is dealt over them in blocks of at least this many bytes of the
# largest layer output, BLOCKS_PER_THREAD per thread when it is big enough (a thread that finishes
# first takes another block), one per thread when not; a smaller batch runs as on one thread.
# LeNet-5 at batch 256 on two threads: four blocks of 64; batch 64 as on one thread (two blocks of
# 32 on two free cores measured 1.11-1.15 times one thread: at that size much of a block's time is
# Python work, and the two threads take turns holding the interpreter lock for it).
THREAD_BLOCK_MIN_BYTES = 2**20
BLOCKS_PER_THREAD = 2
# A lean trace too small for blocks runs the block code in one block (for a max-pool applying the
# ReLU below it, Network._relu_in_pool) from this many bytes of the largest layer output: below it
# the block code's fixed cost is more than the ReLU saves (LeNet-5 in float32, lean trace CPU time
# right after a default trace, block code / whole-batch code: batch 4 1.10, 16 1.02, 32 0.99,
# 64 0.97).
LEAN_ONE_BLOCK_MIN_BYTES = 2**20


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


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
    input_grad: np.ndarray | None  # dL/dx, shape of x; None from trace(..., need_input_grad=False)
    layers: list[LayerTrace]
    x: np.ndarray
    y: np.ndarray
    sample_losses: np.ndarray | None = None  # (N,): each sample's own loss; loss is their mean

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
        self.names: list[str] = layer_names(self.spec["layers"])
        for index, (layer_spec, (in_shape, out_shape)) in enumerate(zip(self.spec["layers"], self.layer_shapes)):
            self.layers.append(LAYER_CLASSES[layer_spec["type"]](layer_spec, in_shape, out_shape, slot=index))
        self._activations_per_sample = sum(int(np.prod(s[1])) for s in self.layer_shapes)
        self._largest_output_bytes = max(math.prod(shape) for _, shape in self.layer_shapes) * self.dtype.itemsize
        # the largest im2col matrix (and its gradient) a conv layer builds per sample
        self._window_values_per_sample = max(
            (in_shape[0] * layer_spec["kernel"][0] * layer_spec["kernel"][1] * out_shape[1] * out_shape[2]
             for layer_spec, (in_shape, out_shape) in zip(self.spec["layers"], self.layer_shapes)
             if layer_spec["type"] == "conv"), default=0)
        rng = np.random.default_rng(self.spec["seed"])
        self.params: list[dict] = [layer.init_params(rng, self.dtype) for layer in self.layers]
        # The ReLU layers a lean trace in blocks lets the max-pool above apply (a lean trace keeps
        # neither layer's arrays). Max commutes with the monotone ReLU, so the pool takes the
        # maximum and winners of z and the ReLU runs on the pooled values only (LeNet-5: a quarter
        # of the elements), and backward applies relu' to the pooled delta before the pool routes
        # it, instead of to the whole conv output. The gradients are the same numbers: where a
        # window's largest z is positive, z's winner (the first offset equal to it) is relu(z)'s
        # too, and relu' is 1 there; where it is not, the delta is 0 either way. Only the winners
        # of windows without a positive z differ, and a lean trace returns no winners. Not for
        # other activations: leaky ReLU, sigmoid and tanh can round different z to one value,
        # making ties (other winners) that z does not have. (A max-pool never ends a network.)
        self._relu_in_pool = frozenset(
            index for index in range(len(self.layers) - 1)
            if self.layers[index].activation == "relu" and self.layers[index + 1].type == "maxpool")

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
    def trace(self, x: Any, y: Any, edits: Any = None, need_input_grad: bool = True,
              keep_intermediates: bool = True) -> Trace:
        """Forward and backward on (x, y), keeping every intermediate; updates nothing.

        ``edits`` (a list of ``{"layer", "param", "index", "value"}``) traces the network as if
        those weights had those values (rounded to the network's dtype); ``net.params`` is never
        written: the edited arrays are copies.
        ``need_input_grad=False`` skips dL/dx (the first layer's input gradient; ``input_grad`` is
        then None), for a caller that only applies the weights' gradients, as a training loop does;
        everything else in the trace is the same.
        ``keep_intermediates=False`` is a training step's trace: the loss, each sample's loss,
        every layer's gradients and params, and the output layer's z, a, delta and grad_a (its
        predictions), but no other layer's input, z, a, delta, grad_a or argmax (None). The
        batch then goes through in blocks whose intermediates live in buffers reused from block
        to block, instead of being written out for the whole batch (at LeNet-5's batch 256,
        31 MB a step, most of it written to memory rather than cache).
        """
        given_x, given_y = x, y
        x = self.check_input(x)
        y = self.check_target(y, x.shape[0])
        params = self.edited_params(edits)
        # The trace keeps x and y: it must not change when the caller later writes into theirs.
        if isinstance(given_x, np.ndarray) and np.may_share_memory(x, given_x):
            x = x.copy()
        if isinstance(given_y, np.ndarray) and np.may_share_memory(y, given_y):
            y = y.copy()
        return self._trace(x, y, params, need_input_grad, keep_intermediates)

    def _forward_layers(self, x: np.ndarray, params: list[dict], keep: bool) -> list[tuple]:
        """(z, a, argmax, cache) of every layer for a checked x, with the given weights."""
        outputs = []
        a = x
        for layer, layer_params in zip(self.layers, params):
            outputs.append(layer.forward(a, layer_params, keep=keep))
            a = outputs[-1][1]
        return outputs

    def trace_blocks(self, N: int) -> list[tuple[int, int]]:
        """The (n0, n1) blocks a trace of N samples runs in: of at most BLOCK_BYTES of the largest
        layer output, and, when the pass has several threads and the batch gives each at least
        THREAD_BLOCK_MIN_BYTES, at least one per thread (BLOCKS_PER_THREAD if big enough)."""
        sample_bytes = self._largest_output_bytes
        batch_bytes = N * sample_bytes
        count = -(-N // max(1, BLOCK_BYTES // sample_bytes))
        threads = kernel_threads()
        if threads > 1 and batch_bytes >= threads * THREAD_BLOCK_MIN_BYTES:
            count = max(count, min(threads * BLOCKS_PER_THREAD, batch_bytes // max(1, THREAD_BLOCK_MIN_BYTES)))
        count = min(N, count)
        return [(N * k // count, N * (k + 1) // count) for k in range(count)]

    def _trace(self, x: np.ndarray, y: np.ndarray, params: list[dict],
               need_input_grad: bool = True, keep_intermediates: bool = True) -> Trace:
        blocks = self.trace_blocks(x.shape[0])
        # The lean form needs whole-batch arrays only at the two ends: the output layer's own
        # (not a reshape of a block's) and dL/dx (not a reshape of the first layer's block delta).
        lean = not keep_intermediates and not self.layers[-1].reshapes_only and not (
            need_input_grad and self.layers[0].reshapes_only)
        if len(blocks) > 1:
            trace = self._trace_in_blocks(x, y, params, need_input_grad, blocks, keep=not lean)
        else:
            # Too small a batch for blocks: dealing the kernels' chunks over threads instead
            # measured no faster than one thread, and ~3 % slower at LeNet-5's batch 64 with the
            # second core free (the hand-offs cost what the second core saves), so it runs as on
            # one thread. The lean form runs the block code in one block only where a max-pool
            # applies the ReLU below it (_relu_in_pool) and the batch is big enough for that to
            # pay (LEAN_ONE_BLOCK_MIN_BYTES; LeNet-5's batch 64: 3 % faster than whole); without
            # that it gains nothing there (3 % slower than whole).
            in_one_block = (lean and self._relu_in_pool
                            and x.shape[0] * self._largest_output_bytes >= LEAN_ONE_BLOCK_MIN_BYTES)
            with on_calling_thread_only():
                if in_one_block:
                    trace = self._trace_in_blocks(x, y, params, need_input_grad, blocks, keep=False)
                else:
                    trace = self._trace_whole(x, y, params, need_input_grad)
        if not keep_intermediates:
            for record in trace.layers[:-1]:
                record.input = record.z = record.a = record.delta = record.grad_a = None
                record.argmax = None
            trace.layers[-1].input = None
        return trace

    def _trace_whole(self, x: np.ndarray, y: np.ndarray, params: list[dict],
                     need_input_grad: bool) -> Trace:
        """The trace of the whole batch in one go, layer by layer."""
        records: list[LayerTrace] = []
        caches = []
        a = x
        for index, (layer, layer_params) in enumerate(zip(self.layers, params)):
            z, out, argmax, cache = layer.forward(a, layer_params)
            records.append(LayerTrace(
                index=index, name=self.names[index], type=layer.type, spec=layer.spec,
                input=a, z=z, a=out, argmax=argmax,
                params={key: value.copy() for key, value in layer_params.items()}))
            caches.append(cache)
            a = out

        last = records[-1]
        per_sample = sample_losses(self.loss, last.z, last.a, y)
        loss = batch_mean(per_sample)
        delta, grad_a = output_delta(self.loss, self.layers[-1].activation or "identity",
                                     last.z, last.a, y)
        upstream = None
        for index in reversed(range(len(self.layers))):
            layer, record = self.layers[index], records[index]
            if upstream is not None:
                grad_a = upstream
                delta = layer.delta_from_grad_a(grad_a, record.z, record.a)
            record.delta, record.grad_a = delta, grad_a
            upstream, record.grads = layer.backward(delta, caches[index], params[index],
                                                    need_dx=need_input_grad or index > 0)
            caches[index] = None  # free the im2col matrix as soon as it is used
        SCRATCH.trim()

        return Trace(loss=loss, input_grad=upstream, layers=records, x=x, y=y,
                     sample_losses=per_sample)

    def _trace_in_blocks(self, x: np.ndarray, y: np.ndarray, params: list[dict], need_input_grad: bool,
                         blocks: list[tuple[int, int]], keep: bool = True) -> Trace:
        """The same trace as _trace_whole, done block by block of the batch: each block goes forward
        through every layer and straight back (its output delta is that block's rows of the whole
        batch's: the batch mean's N is the whole batch's), writing its rows of the whole batch's
        arrays, so nothing is copied afterwards and a block's intermediates are still in cache when
        its backward reads them. The blocks are dealt over the pass's threads, one hand-off for the
        whole trace; the weights' gradients are summed over the blocks in block order (the same
        numbers on any thread count).

        ``keep=False`` (trace(..., keep_intermediates=False)): only x, dL/dx and the output layer's
        arrays are the whole batch's; every other layer's arrays are one block's, made for the
        thread running it (reused by its next block), and the dense layers'
        gradients are summed over the blocks like the others; the max-pools above ReLU layers apply
        their ReLU (``_relu_in_pool``)."""
        N, last = x.shape[0], len(self.layers) - 1
        relu_in_pool = frozenset() if keep else self._relu_in_pool
        records = [LayerTrace(index=index, name=self.names[index], type=layer.type, spec=layer.spec,
                              input=None, z=None, a=None,
                              params={key: value.copy() for key, value in layer_params.items()})
                   for index, (layer, layer_params) in enumerate(zip(self.layers, params))]
        output_activation = self.layers[-1].activation or "identity"
        if keep:
            whole = self._block_arrays(x, N, lambda index, role, shape, dtype: np.empty(shape, dtype))
            for record, arrays in zip(records, whole):
                record.input, record.z, record.a, record.argmax = (
                    arrays["input"], arrays["z"], arrays["a"], arrays["argmax"])
                record.delta, record.grad_a = arrays["delta"], arrays["grad_a"]
            first_delta = whole[0]["delta"]
        else:
            most = max(n1 - n0 for n0, n1 in blocks)
            final = {}  # the output layer's arrays: the whole batch's, shared by the threads

            def block_array(index, role, shape, dtype):
                # a block's arrays: new each trace, reused by the thread's next block. From malloc
                # rather than scratch: right after other work (the benchmark's default trace) they
                # land on memory just freed, still in cache, where scratch of their own was not
                # (LeNet-5, one block of 64: 8.60 -> 8.03 ms; batch 256 the same either way).
                if index < last:
                    return np.empty((most,) + shape[1:], dtype)
                if role not in final:  # made by the calling thread's call just below
                    final[role] = np.empty((N,) + shape[1:], dtype)
                return final[role]

            output = self._block_arrays(x, most, block_array, relu_in_pool)[-1]
            records[-1].z, records[-1].a = output["z"], output["a"]
            records[-1].delta, records[-1].grad_a = output["delta"], output["grad_a"]
            first_delta = None  # (lean only when the first layer is no reshape, or no dL/dx)
        input_grad = None
        if need_input_grad:
            input_grad = (first_delta.reshape(x.shape) if self.layers[0].reshapes_only
                          else np.empty_like(x))

        def trace_block(n0, n1, grads, arrays):
            views = {}

            def rows(array):
                # the whole batch's arrays have N rows; a block's own have its rows at the top. One
                # view per array and block, so that arrays that are one (a as z without an activation
                # applied, delta as grad_a) stay one: the layers skip the work (`a is not z`)
                view = views.get(id(array))
                if view is None:
                    view = views[id(array)] = array[n0:n1] if array.shape[0] == N else array[: n1 - n0]
                return view

            caches = []
            for index, (layer, layer_params, layer_arrays) in enumerate(zip(self.layers, params, arrays)):
                if layer.reshapes_only:
                    caches.append(None)
                    continue
                argmax = layer_arrays["argmax"]
                out = (rows(layer_arrays["z"]), rows(layer_arrays["a"]), None if argmax is None else rows(argmax))
                # this thread runs the block's backward before another block's forward: the conv
                # layers' im2col matrices (scratch) stay valid until then
                caches.append(layer.forward_block(rows(layer_arrays["input"]), layer_params, out, keep_cols=True))
                if index - 1 in relu_in_pool:  # the max of z pooled: its ReLU is the max of the ReLU
                    activate_into("relu", out[0], out[0])
            final_arrays = arrays[-1]
            z, a = rows(final_arrays["z"]), rows(final_arrays["a"])
            block_losses = sample_losses(self.loss, z, a, y[n0:n1])
            delta, grad_a = output_delta(self.loss, output_activation, z, a, y[n0:n1], batch_size=N)
            rows(final_arrays["delta"])[...] = delta
            if grad_a is not None:
                rows(final_arrays["grad_a"])[...] = grad_a
            for index in reversed(range(last + 1)):
                layer, layer_arrays = self.layers[index], arrays[index]
                if layer.reshapes_only:
                    continue
                if index - 1 in relu_in_pool:
                    # relu'(pooled z) on the pooled delta (the pooled values are relu(max z): > 0
                    # where max z is), which the pool then routes straight into the layer below's delta
                    pooled, grad_a = rows(layer_arrays["a"]), rows(layer_arrays["grad_a"])
                    self.layers[index - 1].delta_from_grad_a(grad_a, pooled, pooled, out=grad_a)
                    below = arrays[index - 1]["delta"]
                elif index > 0:
                    below = arrays[index - 1]["grad_a"]
                else:
                    below = input_grad
                if index < last and index not in relu_in_pool:
                    layer.delta_from_grad_a(rows(layer_arrays["grad_a"]), rows(layer_arrays["z"]),
                                            rows(layer_arrays["a"]), out=rows(layer_arrays["delta"]))
                options = {"need_grads": False} if layer.type == "dense" and keep else {}
                _, block_grads = layer.backward(rows(layer_arrays["delta"]), caches[index], params[index],
                                                need_dx=below is not None,
                                                dx_out=None if below is None else rows(below), **options)
                caches[index] = None  # free the block's cache as soon as it is used
                if block_grads is None:  # made below, from the whole batch's arrays
                    continue
                if grads[index] is None:
                    grads[index] = block_grads
                else:
                    for key, value in block_grads.items():
                        grads[index][key] += value
            return block_losses

        def job(part):
            grads = [None] * len(self.layers)
            arrays = whole if keep else self._block_arrays(x, N, block_array, relu_in_pool)
            return grads, [trace_block(n0, n1, grads, arrays) for n0, n1 in part]

        parts = over_threads(job, blocks)
        for index, (layer, record) in enumerate(zip(self.layers, records)):
            if layer.type == "dense" and keep:
                # one product over the whole batch: the blocks' rows of delta and input are all there
                record.grads = layer.grads(record.delta, record.input)
                continue
            record.grads = parts[0][0][index] or {}
            for more, _ in parts[1:]:
                for key, value in (more[index] or {}).items():
                    record.grads[key] += value
        per_sample = np.concatenate([block for _, losses in parts for block in losses])
        SCRATCH.trim()
        return Trace(loss=batch_mean(per_sample), input_grad=input_grad, layers=records, x=x, y=y,
                     sample_losses=per_sample)

    def _block_arrays(self, x: np.ndarray, n: int, new, relu_in_pool=frozenset()) -> list[dict]:
        """Per layer the arrays a trace in blocks writes ("input", "z", "a", "argmax", "delta",
        "grad_a"), for n rows of which the first layer reads x's: each layer's input is the layer
        below's a, a layer without activation has a as z and delta as grad_a, a reshape's arrays
        are views of its neighbours', and the grad_a of the layer below one is that one's dL/d
        input. ``new(layer index, role, shape, dtype)`` makes the others. The layers in
        ``relu_in_pool`` (whose ReLU the max-pool above applies) have a as z and no grad_a: the
        pool's backward writes their delta."""
        arrays = []
        below = x
        for index, layer in enumerate(self.layers):
            # a reshape's rows are its input's (x's whole batch for a first layer, else n)
            z, out, argmax = layer.outputs(below, below.shape[0] if layer.reshapes_only else n,
                                           lambda role, shape, dtype, index=index: new(index, role, shape, dtype),
                                           activated=index not in relu_in_pool)
            arrays.append({"input": below, "z": z, "a": out, "argmax": argmax, "delta": None, "grad_a": None})
            below = out
        last = len(self.layers) - 1
        final = arrays[last]
        final["delta"] = new(last, "delta", final["a"].shape, x.dtype)
        final["grad_a"] = new(last, "grad_a", final["a"].shape, x.dtype) if forms_output_grad_a(self.loss) else None
        # each layer's dL/da but the last's is dL/d input of the layer above it
        for index in reversed(range(last + 1)):
            layer, layer_arrays = self.layers[index], arrays[index]
            if index < last and index not in relu_in_pool:  # (else made for the pool above, below)
                layer_arrays["delta"] = (layer_arrays["grad_a"] if layer.activation is None
                                         else new(index, "delta", layer_arrays["grad_a"].shape, x.dtype))
            if index > 0:
                below_arrays = arrays[index - 1]
                if index - 1 in relu_in_pool:
                    below_arrays["delta"] = new(index - 1, "delta", below_arrays["z"].shape, x.dtype)
                    continue
                below_arrays["grad_a"] = (layer_arrays["delta"].reshape(below_arrays["a"].shape) if layer.reshapes_only
                                          else new(index - 1, "grad_a", below_arrays["a"].shape, x.dtype))
        return arrays

    # --- what-if edits and gradient checks -------------------------------------------------------

    def _parameter_cell(self, where: str, layer: Any, param: Any, index: Any) -> tuple:
        """(layer, param, index tuple) after checking they name one existing weight, else
        ValueError saying which part is wrong."""
        if not _is_int(layer) or not 0 <= layer < len(self.layers):
            raise ValueError(f"{where}: 'layer' must be a layer index 0..{len(self.layers) - 1}, "
                             f"got {layer!r}")
        name = f"layer {layer} ({self.names[layer]})"
        if not self.params[layer]:
            with_params = ", ".join(f"{i} ({self.names[i]})" for i, p in enumerate(self.params) if p)
            raise ValueError(f"{where}: {name} has no weights or biases; layers with parameters: "
                             f"{with_params}")
        if param not in ("W", "b"):
            raise ValueError(f"{where}: 'param' must be \"W\" or \"b\", got {param!r}")
        shape = self.params[layer][param].shape
        return (layer, param, self._cell_index(where, index, shape, f"{name} {param}"))

    @staticmethod
    def _cell_index(where: str, index: Any, shape: tuple, what: str) -> tuple:
        if _is_int(index):
            index = (index,)
        if (not isinstance(index, (list, tuple)) or len(index) != len(shape)
                or not all(_is_int(i) for i in index)):
            raise ValueError(f"{where}: 'index' must be {len(shape)} integer(s), one per axis of "
                             f"{what} of shape {tuple(shape)}, got {index!r}")
        if any(not 0 <= i < n for i, n in zip(index, shape)):
            raise ValueError(f"{where}: index {tuple(index)} is out of range for {what} of shape "
                             f"{tuple(shape)} (each index from 0 to its size - 1)")
        return tuple(int(i) for i in index)

    def edited_params(self, edits: Any) -> list[dict]:
        """The weights as ``edits`` would make them: the live dicts where nothing changes, copies
        of the edited arrays otherwise, so ``self.params`` is never written. Raises ValueError
        naming the edit and what is wrong with it (every edit is checked before any is applied)."""
        if edits is None:
            return self.params
        if not isinstance(edits, (list, tuple)):
            raise ValueError(f"edits must be a list of {{\"layer\", \"param\", \"index\", "
                             f"\"value\"}}, got {type(edits).__name__}")
        checked = []
        for number, edit in enumerate(edits):
            where = f"edits[{number}]"
            if not isinstance(edit, dict) or set(edit) != EDIT_KEYS:
                raise ValueError(f"{where}: an edit must have exactly the keys layer, param, index, "
                                 f"value; got {edit!r}")
            cell = self._parameter_cell(where, edit["layer"], edit["param"], edit["index"])
            value = edit["value"]
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not np.isfinite(value):
                raise ValueError(f"{where}: 'value' must be a finite number, got {value!r}")
            with np.errstate(over="ignore"):
                if not np.isfinite(self.dtype.type(value)):
                    raise ValueError(f"{where}: 'value' {value!r} is beyond the range of the "
                                     f"network's {self.dtype.name} weights")
            checked.append((cell, value))
        params = [dict(layer_params) for layer_params in self.params]
        copied = set()
        for (layer, param, index), value in checked:
            if (layer, param) not in copied:
                params[layer][param] = params[layer][param].copy()
                copied.add((layer, param))
            params[layer][param][index] = value  # rounded to the network's dtype here
        return params

    def gradcheck(self, x: Any, y: Any, of: Any, epsilon: float = 1e-5, edits: Any = None) -> dict:
        """The analytic dL/dθ of one weight, bias or input value (sample 0) beside a central
        difference (L(θ + ε) - L(θ - ε)) / 2ε computed in float64 on copies; nothing is changed.

        ``of`` is ``{"layer": i, "param": "W" | "b", "index": (...)}`` or ``{"input": (c, h, w)}``.
        The answer also says whether a kink lies within ε (``"kink"``, ``"kinks"``): a ReLU
        pre-activation that changes sign, or a max-pool window whose winner changes, between the
        two perturbed passes. There the loss has a corner, the central difference averages two
        slopes, and it may rightly disagree with the analytic value (a one-sided derivative).
        """
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) \
                or not np.isfinite(epsilon) or epsilon <= 0:
            raise ValueError(f"epsilon must be a positive finite number, got {epsilon!r}")
        x = self.check_input(x)
        y = self.check_target(y, x.shape[0])
        params = self.edited_params(edits)
        target = self._gradient_target(of)

        trace = self._trace(x, y, params)
        x64 = x.astype(np.float64)  # copies: the same values the trace saw, in float64
        y64 = y.astype(np.float64) if y.dtype.kind == "f" else y.copy()
        params64 = [{key: value.astype(np.float64) for key, value in p.items()} for p in params]
        if "input" in target:
            position = (0,) + target["input"]
            analytic = trace.input_grad[position]
            array = x64
        else:
            position = target["index"]
            analytic = trace.layers[target["layer"]].grads[target["param"]][position]
            array = params64[target["layer"]][target["param"]]

        original = array[position]
        passes = []
        for value in (original + epsilon, original - epsilon):
            array[position] = value
            outputs = self._forward_layers(x64, params64, keep=False)
            last_z, last_a = outputs[-1][0], outputs[-1][1]
            passes.append((float(array[position]), loss_value(self.loss, last_z, last_a, y64), outputs))
        array[position] = original
        SCRATCH.trim()
        (value_plus, loss_plus, outputs_plus), (value_minus, loss_minus, outputs_minus) = passes
        if value_plus == value_minus:
            raise ValueError(f"epsilon {epsilon:g} is too small to change the value {float(original):g} "
                             "in float64; use a larger epsilon")
        # divide by the step actually taken in float64 (original ± ε rounds)
        numeric = (loss_plus - loss_minus) / (value_plus - value_minus)
        analytic = float(analytic)
        abs_error = abs(analytic - numeric)
        scale = max(abs(analytic), abs(numeric))
        kinks = self._kinks(outputs_plus, outputs_minus)
        return {
            "of": target,
            "analytic": analytic,
            "numeric": numeric,
            "abs_error": abs_error,
            "rel_error": abs_error / scale if scale > 0 else 0.0,
            "epsilon": float(epsilon),
            "loss": trace.loss,
            "loss_plus": loss_plus,
            "loss_minus": loss_minus,
            "value": float(original),
            "dtype": self.dtype.name,
            "kink": kinks[0] if kinks else None,
            "kinks": kinks,
        }

    def _gradient_target(self, of: Any) -> dict:
        """``of`` checked and normalized: {"layer", "param", "index": [...]} or {"input": [c, h, w]}."""
        where = "of"
        if isinstance(of, dict) and set(of) == {"input"}:
            index = self._cell_index(where, of["input"], self.input_shape, "the input (sample 0)")
            return {"input": index}
        if isinstance(of, dict) and set(of) == {"layer", "param", "index"}:
            layer, param, index = self._parameter_cell(where, of["layer"], of["param"], of["index"])
            return {"layer": layer, "param": param, "index": index}
        raise ValueError(f"of must be {{\"layer\": i, \"param\": \"W\" or \"b\", \"index\": [...]}} or "
                         f"{{\"input\": [c, h, w]}}, got {of!r}")

    def _kinks(self, plus: list[tuple], minus: list[tuple]) -> list[dict]:
        """Per layer, where the network's piecewise-linear parts switch between the θ + ε and θ - ε
        passes: ReLU / leaky ReLU pre-activations that change side of 0, max-pool winners that
        change. Each entry names the layer, the kind, how many switched and the first of them."""
        kinks = []
        for index, (layer, (z_plus, _, argmax_plus, _), (z_minus, _, argmax_minus, _)) in enumerate(
                zip(self.layers, plus, minus)):
            name = f"layer {index} ({self.names[index]})"
            if layer.type != "maxpool" and layer.activation in ("relu", "leaky_relu"):
                switched = (z_plus > 0) != (z_minus > 0)
                if switched.any():
                    first = tuple(int(i) for i in np.argwhere(switched)[0])
                    kinks.append({
                        "layer": index, "name": self.names[index], "kind": layer.activation,
                        "count": int(switched.sum()), "index": first,
                        "z_plus": float(z_plus[first]), "z_minus": float(z_minus[first]),
                        "explanation": (
                            f"{name}: {int(switched.sum())} {layer.activation} pre-activation(s) "
                            f"change sign within ±ε (first at {list(first)}: z = "
                            f"{float(z_minus[first]):.3g} at -ε, {float(z_plus[first]):.3g} at +ε); "
                            "the loss has a corner there, so the central difference averages the "
                            "slopes on both sides while the analytic gradient takes one side")})
            elif layer.type == "maxpool":
                switched = argmax_plus != argmax_minus
                if switched.any():
                    first = tuple(int(i) for i in np.argwhere(switched)[0])
                    kinks.append({
                        "layer": index, "name": self.names[index], "kind": "maxpool",
                        "count": int(switched.sum()), "index": first,
                        "winner_plus": int(argmax_plus[first]),
                        "winner_minus": int(argmax_minus[first]),
                        "explanation": (
                            f"{name}: {int(switched.sum())} max-pool window(s) change winner within "
                            f"±ε (first at {list(first)}: input {int(argmax_minus[first])} wins at "
                            f"-ε, {int(argmax_plus[first])} at +ε); two values tie there, so the "
                            "central difference mixes two routes of the gradient while the "
                            "analytic one follows the winner")})
        return kinks

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
