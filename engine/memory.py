"""How many bytes a pass of a network allocates, worked out from its spec before anything runs.

A trace keeps, per layer and sample, its output, pre-activation, delta and dL/da, the maxpool
winners, and a copy of the weights and their gradients. The fast kernels add their temporaries
(scratch.py): per conv layer the padded input, the im2col matrix, the output and delta matrices,
and the column gradients of dx -- for the whole batch when the batch is innermost, for a
cache-sized chunk of it in the wide-rows form (kernels.uses_wide_rows). Scratch is keyed by a
layer's position, so during one trace every conv layer's buffers are alive at once; for a deep net
with big kernels they dwarf the activations. The figures below follow the kernels' own choices (kernels.py) buffer by buffer and
add the largest temporaries NumPy makes on the side (activation masks, the dense/conv dx); the
tests check them against what a trace really allocates.
"""

from __future__ import annotations

from math import prod
from typing import Any

from .kernels import FULL_CONVOLUTION_MAX_ELEMENTS, WIDE_CHUNK_BYTES, uses_wide_rows
from .spec import normalize_spec

INDEX_BYTES = 8  # maxpool winners (int64) and their flat scatter indices
# maxpool_forward's scratch per output: the winning offset and the claim (int16 or int32) and a bool
MAXPOOL_SCRATCH_BYTES = 4 + 4 + 1
# Arrays a trace keeps per layer output: z, a, delta and dL/da.
KEPT_PER_OUTPUT = 4
# Temporaries alive beside the kept arrays at the worst moment, in units of the largest layer
# output: in a trace an activation's mask or derivative and a layer's fresh dx before it is handed
# down; in a forward pass a layer's input, z and a, and an activation's temporary.
TRANSIENT_OUTPUTS = {True: 3, False: 4}


def _conv_scratch(layer: dict, in_shape, out_shape, batch: int, backward: bool,
                  itemsize: int) -> int:
    """Elements of one conv layer's scratch buffers (and its dx temporaries) for a batch, in
    the form the kernel takes for these shapes (kernels.uses_wide_rows)."""
    C, H, W = in_shape
    F, Ho, Wo = out_shape
    (HH, WW), (ph, pw) = layer["kernel"], layer["padding"]
    elements = 0
    if layer.get("padding_mode", "zeros") == "circular":
        # the layer wrap-pads the input (kept for backward) and folds the padded dx back
        H, W, ph, pw = H + 2 * ph, W + 2 * pw, 0, 0
        elements += C * H * W * batch * (2 if backward else 1)
    K = C * HH * WW
    Hp, Wp = H + 2 * ph, W + 2 * pw
    if uses_wide_rows((batch, C, H, W), (F, C, HH, WW), layer["stride"], (ph, pw)):
        length = (Ho - 1) * Wp + Wo
        chunk = min(batch, max(1, WIDE_CHUNK_BYTES // max(1, K * length * itemsize)))
        elements += batch * C * Hp * Wp + (K + F) * chunk * length  # planes, cols, z_wide
        if backward:
            span = (HH - 1) * Wp + WW - 1 + Hp * Wp
            # delta_wide, the shifted column gradients, dx_planes, dW
            elements += F * chunk * length + chunk * K * span + chunk * C * Hp * Wp + 2 * K * F
        return elements
    padded = C * Hp * Wp * batch
    columns = K * Ho * Wo * batch
    outputs = F * Ho * Wo * batch
    elements += padded + columns + outputs  # x_pad, cols, z_rows
    if not backward:
        return elements
    elements += outputs  # delta_mat
    if ph < HH and pw < WW and F * HH * WW * batch * H * W <= FULL_CONVOLUTION_MAX_ELEMENTS:
        spread = F * (H + HH - 1) * (W + WW - 1) * batch
        elements += spread + F * HH * WW * H * W * batch + C * H * W * batch  # + dx_mat
    else:
        elements += columns + padded  # dcols, dx_pad
    return elements


def _estimate(spec: Any, batch: int, backward: bool) -> int:
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
        if kind != "flatten":
            values += outputs * (KEPT_PER_OUTPUT if backward else 0)
        values += parameters * (3 if backward else 1)  # weights; a trace's copy and gradients
    values += TRANSIENT_OUTPUTS[backward] * largest
    return (values + scratch_values) * itemsize + index_bytes


def trace_bytes(spec: Any, batch: int) -> int:
    """Bytes ``Network.trace`` of a batch allocates at its peak (kept arrays and scratch)."""
    return _estimate(spec, batch, backward=True)


def forward_bytes(spec: Any, batch: int) -> int:
    """Bytes a forward pass alone (``forward``, ``batch_loss``) of a batch allocates at its peak."""
    return _estimate(spec, batch, backward=False)
