"""How many bytes a pass of a network allocates, worked out from its spec before anything runs.

A trace keeps, per layer and sample, its output, pre-activation, delta and dL/da, the maxpool
winners, and a copy of the weights and their gradients. The fast kernels add their temporaries
(scratch.py): per conv layer the padded input, the im2col matrix, the output and delta matrices,
and for dL/dx either the spread delta and its im2col matrix (small maps) or the column gradients
and the padded dx (large ones). Scratch is keyed by a layer's position, so during one trace every
conv layer's buffers are alive at once; for a deep net with big kernels they dwarf the
activations. The figures below follow the kernels' own choices (kernels.py) buffer by buffer and
add the largest temporaries NumPy makes on the side (activation masks, the dense/conv dx); the
tests check them against what a trace really allocates.
"""

from __future__ import annotations

from math import prod
from typing import Any

from .kernels import (FULL_CONVOLUTION_MAX_ELEMENTS, SMALL_PRODUCT_VALUES, WIDE_CHUNK_BYTES, batch_innermost_chunk,
                      uses_wide_rows, windows_are_disjoint)
from .spec import normalize_spec

INDEX_BYTES = 8  # maxpool winners (int32, kernels.WINNER_DTYPE) and their flat scatter indices (int64), at most
# maxpool_forward's scratch per output: the winning offset and the claim (int16 or int32) and a bool
MAXPOOL_SCRATCH_BYTES = 4 + 4 + 1
# Arrays a trace keeps per layer output: z, a, delta and dL/da.
KEPT_PER_OUTPUT = 4
# Temporaries alive beside the kept arrays at the worst moment, in units of the largest layer
# output: in a trace an activation's mask or derivative and a layer's fresh dx before it is handed
# down; in a forward pass a layer's input, z and a, and an activation's temporary.
TRANSIENT_OUTPUTS = {True: 3, False: 4}
# Python objects and small arrays a pass makes on the way (views, shapes, closures, a conv layer's
# bias and weight-sized gradient temporaries): a few kB whatever the sizes.
SMALL_ALLOCATIONS_BYTES = 4096


def _conv_scratch(layer: dict, in_shape, out_shape, batch: int, backward: bool,
                  itemsize: int) -> int:
    """Elements of one conv layer's scratch buffers (and its dx temporaries) for a batch."""
    C, H, W = in_shape
    F, Ho, Wo = out_shape
    (HH, WW), (ph, pw) = layer["kernel"], layer["padding"]
    extra = 0
    if layer.get("padding_mode") == "circular":
        # the layer wraps the input itself (a copy kept until backward) and the kernel pads nothing;
        # backward folds the padded dx back through two copies
        H, W, ph, pw = H + 2 * ph, W + 2 * pw, 0, 0
        extra = C * H * W * batch * (1 + (2 if backward else 0))
    if uses_wide_rows((batch, C, H, W), (F, C, HH, WW), layer["stride"], (ph, pw)):
        return extra + _wide_scratch(C, H, W, F, HH, WW, ph, pw, batch, backward, itemsize)
    # the batch-innermost form: every buffer holds one chunk of the batch (kernels.py)
    chunk = batch_innermost_chunk(batch, C * HH * WW * Ho * Wo, itemsize)
    padded = C * (H + 2 * ph) * (W + 2 * pw) * chunk
    columns = C * HH * WW * Ho * Wo * chunk
    outputs = F * Ho * Wo * chunk
    # x_pad, cols and its row of ones, z_rows and z_by_sample
    elements = extra + padded + columns + Ho * Wo * chunk + 2 * outputs
    if not backward:
        return elements
    # delta_mat, delta as rows for dW, and dW's partial products (kernels.add_small_products)
    terms, product = Ho * Wo * chunk, C * HH * WW * F
    group = max(1, SMALL_PRODUCT_VALUES // product)
    elements += 2 * outputs + ((terms // group) * product if terms > group else 0)
    if ph < HH and pw < WW and F * HH * WW * chunk * H * W <= FULL_CONVOLUTION_MAX_ELEMENTS:
        spread = F * (H + HH - 1) * (W + WW - 1) * chunk
        elements += spread + F * HH * WW * H * W * chunk + C * H * W * chunk  # + dx_mat
    elif tuple(layer["stride"]) == (1, 1):
        # delta on wide rows, dcols (one kernel row's) on them, the flat padded dx and its margin
        wide = Ho * (W + 2 * pw) * chunk
        elements += F * wide + C * WW * wide + padded + (WW - 1) * chunk
    else:
        elements += columns // HH + padded  # dcols (one kernel row's), dx_pad
    return elements


def _wide_scratch(C, H, W, F, HH, WW, ph, pw, batch, backward, itemsize) -> int:
    """The "wide rows" form (kernels.py): the padded planes of the whole batch, then per chunk of
    the batch its im2col rows and products; backward adds the chunk's delta rows, the zero-margined
    shifted column gradients and the padded dx planes."""
    Hp, Wp = H + 2 * ph, W + 2 * pw
    Ho, Wo = Hp - HH + 1, Wp - WW + 1
    K, S, L = C * HH * WW, Hp * Wp, (Ho - 1) * Wp + Wo
    chunk = min(batch, max(1, WIDE_CHUNK_BYTES // max(1, K * L * itemsize)))
    elements = C * S * batch + K * chunk * L + F * chunk * L  # x_planes, wide_cols, z_wide
    if backward:
        span = (HH - 1) * Wp + WW - 1 + S
        elements += chunk * L  # wide_cols' row of ones
        elements += F * chunk * L + chunk * K * span + chunk * C * S  # delta_wide, shifted, dx_planes
    return elements


def _estimate(spec: Any, batch: int, backward: bool, threads: int) -> int:
    normalized, shapes = normalize_spec(spec)
    itemsize = 4 if normalized["dtype"] == "float32" else 8
    input_values = prod(normalized["input_shape"]) * batch
    values = input_values * (2 if backward else 1)  # x, and dL/dx
    index_bytes = 0
    scratch_values = 0
    largest = input_values
    for layer, (in_shape, out_shape) in zip(normalized["layers"], shapes):
        outputs = prod(out_shape) * batch
        largest = max(largest, outputs)
        kind = layer["type"]
        if kind == "conv":
            scratch_values += _conv_scratch(layer, in_shape, out_shape, batch, backward, itemsize)
            parameters = layer["filters"] * (in_shape[0] * prod(layer["kernel"]) + 1)
        elif kind == "dense":
            parameters = layer["units"] * (in_shape[0] + 1)
        else:
            parameters = 0
        if kind == "maxpool":
            index_bytes += outputs * (MAXPOOL_SCRATCH_BYTES + (2 * INDEX_BYTES if backward else 0))
            if windows_are_disjoint(layer["size"], layer["stride"]):
                scratch_values += prod(layer["size"]) * outputs  # each window offset's inputs, copied out
        if kind != "flatten":
            values += outputs * (KEPT_PER_OUTPUT if backward else 0)
        values += parameters * (3 if backward else 1)  # weights; a trace's copy and gradients
    values += TRANSIENT_OUTPUTS[backward] * largest
    # each thread of a pass dealt over several keeps its own scratch (scratch.py), at most a whole
    # batch's worth each
    return (values + scratch_values * max(1, threads)) * itemsize + index_bytes + SMALL_ALLOCATIONS_BYTES


def trace_bytes(spec: Any, batch: int, threads: int = 1) -> int:
    """Bytes ``Network.trace`` of a batch allocates at its peak (kept arrays and scratch), run
    with `threads` kernel threads (one: the server's rule, app/__init__.py)."""
    return _estimate(spec, batch, backward=True, threads=threads)


def forward_bytes(spec: Any, batch: int, threads: int = 1) -> int:
    """Bytes a forward pass alone (``forward``, ``batch_loss``) of a batch allocates at its peak."""
    return _estimate(spec, batch, backward=False, threads=threads)
