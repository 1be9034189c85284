"""Validation and normalisation of a network spec (the JSON-able dict of DESIGN.md).

`normalize_spec` checks the whole spec up front and returns a copy with every default filled in and
every size expanded to a pair `[h, w]`, together with the shape each layer produces. Everything the
rest of the engine needs to know about shapes is decided here, once.
"""

from __future__ import annotations

from typing import Any, Mapping

from .kernels import conv_output_size

ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "identity", "softmax")
LOSSES = ("cross_entropy", "binary_cross_entropy", "mse")
DTYPES = ("float32", "float64")
PADDING_MODES = ("zeros", "circular")
# "convolution" is the notes' true convolution (the kernel rotated 180 degrees in the forward
# pass); "cross_correlation" is what frameworks call convolution.
CONV_OPERATIONS = ("cross_correlation", "convolution")
LAYER_TYPES = ("conv", "maxpool", "avgpool", "flatten", "dense")

# Caps that keep one network within a visualiser's memory: they refuse sizes that would exhaust
# the machine long before they refuse anything a person would draw on screen.
MAX_LAYERS = 64
MAX_INPUT_CHANNELS = 64
MAX_INPUT_SIDE = 512
MAX_FILTERS = 1024
MAX_UNITS = 16384
MAX_WINDOW_SIDE = 64
MAX_PARAMETERS = 10_000_000
MAX_ACTIVATIONS_PER_SAMPLE = 8_000_000  # summed over every layer's output
# A conv layer works on its im2col matrix: every window's C*HH*WW values at every output position.
MAX_WINDOW_VALUES_PER_SAMPLE = 64_000_000
MAX_SEED = 2**32 - 1

_TOP_KEYS = {"input_shape", "layers", "loss", "dtype", "seed"}
_LAYER_KEYS = {
    "conv": {"type", "filters", "kernel", "stride", "padding", "padding_mode", "operation",
             "activation"},
    "maxpool": {"type", "size", "stride"},
    "avgpool": {"type", "size", "stride"},
    "flatten": {"type"},
    "dense": {"type", "units", "activation"},
}


class SpecError(ValueError):
    """A network spec that cannot be built; the message names the layer and the problem, and
    ``layer`` is that layer's index (None for a problem of the whole spec)."""

    layer: int | None = None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any, where: str, name: str, low: int, high: int) -> int:
    if not _is_int(value):
        raise SpecError(f"{where}: '{name}' must be an integer, got {value!r}")
    if not low <= value <= high:
        raise SpecError(f"{where}: '{name}' must be between {low} and {high}, got {value}")
    return value


def _pair(value: Any, where: str, name: str, low: int, high: int) -> list[int]:
    """An int or a pair [h, w] of ints, as a pair."""
    if _is_int(value):
        return [_int(value, where, name, low, high)] * 2
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return [_int(v, where, name, low, high) for v in value]
    raise SpecError(f"{where}: '{name}' must be an integer or a pair [h, w] of integers, got {value!r}")


def _check_keys(given: Mapping, allowed: set, where: str) -> None:
    unknown = sorted(str(k) for k in given if k not in allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
                        f"allowed: {', '.join(sorted(allowed))}")


def _activation(layer: Mapping, where: str) -> str:
    activation = layer.get("activation", "identity")
    if activation not in ACTIVATIONS:
        raise SpecError(f"{where}: unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    return activation


def _choice(layer: Mapping, key: str, choices: tuple, where: str) -> str:
    value = layer.get(key, choices[0])
    if value not in choices:
        raise SpecError(f"{where}: unknown {key} {value!r}; choose one of {', '.join(choices)}")
    return value


def normalize_spec(spec: Any) -> tuple[dict, list[tuple[tuple[int, ...], tuple[int, ...]]]]:
    """Validate `spec`; return (normalized spec, [(input_shape, output_shape) per layer]).

    Shapes are without the batch axis. Raises SpecError naming the layer and the problem.
    """
    if not isinstance(spec, Mapping):
        raise SpecError(f"spec must be an object, got {type(spec).__name__}")
    _check_keys(spec, _TOP_KEYS, "spec")
    for key in ("input_shape", "layers"):
        if key not in spec:
            raise SpecError(f"spec: missing required key '{key}'")

    input_shape = spec["input_shape"]
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 3:
        raise SpecError(f"spec: 'input_shape' must be [channels, height, width], got {input_shape!r}")
    shape: tuple[int, ...] = (
        _int(input_shape[0], "spec", "input_shape channels", 1, MAX_INPUT_CHANNELS),
        _int(input_shape[1], "spec", "input_shape height", 1, MAX_INPUT_SIDE),
        _int(input_shape[2], "spec", "input_shape width", 1, MAX_INPUT_SIDE),
    )

    loss = spec.get("loss", "cross_entropy")
    if loss not in LOSSES:
        raise SpecError(f"spec: unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    dtype = spec.get("dtype", "float32")
    if dtype not in DTYPES:
        raise SpecError(f"spec: unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    seed = _int(spec.get("seed", 0), "spec", "seed", 0, MAX_SEED)

    layers = spec["layers"]
    if not isinstance(layers, (list, tuple)) or not layers:
        raise SpecError("spec: 'layers' must be a non-empty list of layer objects")
    if len(layers) > MAX_LAYERS:
        raise SpecError(f"spec: {len(layers)} layers is more than the limit of {MAX_LAYERS}")

    normalized_layers: list[dict] = []
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    parameters = 0
    activations = 0
    for index, layer in enumerate(layers):
        try:
            where = f"layer {index}"
            if not isinstance(layer, Mapping):
                raise SpecError(f"{where}: must be an object with a 'type', got {layer!r}")
            kind = layer.get("type")
            if kind not in LAYER_TYPES:
                raise SpecError(f"{where}: unknown layer type {kind!r}; choose one of {', '.join(LAYER_TYPES)}")
            where = f"layer {index} ({kind})"
            _check_keys(layer, _LAYER_KEYS[kind], where)

            if kind in ("conv", "maxpool", "avgpool") and len(shape) != 3:
                raise SpecError(f"{where}: needs a 3-D feature map (channels, height, width) "
                                f"but its input has shape {list(shape)}")

            if kind == "conv":
                for key in ("filters", "kernel"):
                    if key not in layer:
                        raise SpecError(f"{where}: missing required key '{key}'")
                filters = _int(layer["filters"], where, "filters", 1, MAX_FILTERS)
                kernel = _pair(layer["kernel"], where, "kernel", 1, MAX_WINDOW_SIDE)
                stride = _pair(layer.get("stride", 1), where, "stride", 1, MAX_WINDOW_SIDE)
                padding = _pair(layer.get("padding", 0), where, "padding", 0, MAX_WINDOW_SIDE)
                padding_mode = _choice(layer, "padding_mode", PADDING_MODES, where)
                operation = _choice(layer, "operation", CONV_OPERATIONS, where)
                activation = _activation(layer, where)
                channels, height, width = shape
                for axis, size, k, s, p in (("height", height, kernel[0], stride[0], padding[0]),
                                            ("width", width, kernel[1], stride[1], padding[1])):
                    # Padding may equal or exceed the kernel, as in PyTorch; circular padding copies
                    # rows from the far side, so it cannot take more than the whole input side.
                    if padding_mode == "circular" and p > size:
                        raise SpecError(f"{where}: circular padding {p} is larger than the input {axis} "
                                        f"{size}; wrapping around can add at most {size} on each side")
                    if k > size + 2 * p:
                        raise SpecError(f"{where}: kernel {axis} {k} is larger than the padded input "
                                        f"{axis} {size} + 2*{p} = {size + 2 * p}")
                    if (size + 2 * p - k) % s:
                        raise SpecError(f"{where}: stride {s} does not divide the input {axis}: "
                                        f"({size} + 2*{p} - {k}) % {s} = {(size + 2 * p - k) % s}; "
                                        f"change padding, kernel or stride so the windows tile the input")
                out = (filters,
                       conv_output_size(height, kernel[0], stride[0], padding[0]),
                       conv_output_size(width, kernel[1], stride[1], padding[1]))
                window_values = channels * kernel[0] * kernel[1] * out[1] * out[2]
                if window_values > MAX_WINDOW_VALUES_PER_SAMPLE:
                    raise SpecError(f"{where}: its windows hold {window_values:,} values per sample "
                                    f"({channels}*{kernel[0]}*{kernel[1]} at {out[1]}*{out[2]} positions), more "
                                    f"than the limit of {MAX_WINDOW_VALUES_PER_SAMPLE:,}; use a smaller kernel, "
                                    f"fewer channels or a larger stride")
                normalized = {"type": kind, "filters": filters, "kernel": kernel, "stride": stride,
                              "padding": padding, "padding_mode": padding_mode, "operation": operation,
                              "activation": activation}

            elif kind in ("maxpool", "avgpool"):
                if "size" not in layer:
                    raise SpecError(f"{where}: missing required key 'size'")
                size = _pair(layer["size"], where, "size", 1, MAX_WINDOW_SIDE)
                stride = _pair(layer.get("stride", size), where, "stride", 1, MAX_WINDOW_SIDE)
                channels, height, width = shape
                for axis, extent, k, s in (("height", height, size[0], stride[0]),
                                           ("width", width, size[1], stride[1])):
                    if k > extent:
                        raise SpecError(f"{where}: window {axis} {k} is larger than the input {axis} {extent}")
                    if (extent - k) % s:
                        raise SpecError(f"{where}: window {k} with stride {s} does not divide the input "
                                        f"{axis} {extent}: ({extent} - {k}) % {s} = {(extent - k) % s}")
                out = (channels, conv_output_size(height, size[0], stride[0], 0),
                       conv_output_size(width, size[1], stride[1], 0))
                normalized = {"type": kind, "size": size, "stride": stride}

            elif kind == "flatten":
                out = (_product(shape),)
                normalized = {"type": kind}

            else:  # dense
                if "units" not in layer:
                    raise SpecError(f"{where}: missing required key 'units'")
                if len(shape) != 1:
                    raise SpecError(f"{where}: a dense layer needs a flat input but gets the 3-D map "
                                    f"{list(shape)}; add {{\"type\": \"flatten\"}} before it")
                units = _int(layer["units"], where, "units", 1, MAX_UNITS)
                activation = _activation(layer, where)
                out = (units,)
                normalized = {"type": kind, "units": units, "activation": activation}

            parameters += parameter_count(normalized, shape)

            if normalized.get("activation") == "softmax":
                if index != len(layers) - 1:
                    raise SpecError(f"{where}: softmax is only allowed on the last layer")
                if kind != "dense":
                    raise SpecError(f"{where}: softmax is only allowed on a dense output layer")
                if loss != "cross_entropy":
                    raise SpecError(f"{where}: softmax output needs loss 'cross_entropy', not {loss!r}")
                if out[0] < 2:
                    raise SpecError(f"{where}: softmax needs at least 2 units, got {out[0]}")

            activations += _product(out)
            if parameters > MAX_PARAMETERS:
                raise SpecError(f"{where}: the network has {parameters:,} parameters up to here, "
                                f"more than the limit of {MAX_PARAMETERS:,}")
            if activations > MAX_ACTIVATIONS_PER_SAMPLE:
                raise SpecError(f"{where}: the feature maps up to here hold {activations:,} values per sample, "
                                f"more than the limit of {MAX_ACTIVATIONS_PER_SAMPLE:,}")
            shapes.append((shape, out))
            normalized_layers.append(normalized)
            shape = out
        except SpecError as error:
            error.layer = index
            raise

    last = normalized_layers[-1]
    where = f"layer {len(layers) - 1} ({last['type']})"
    try:
        _check_output(last, shape, loss, where)
    except SpecError as error:
        error.layer = len(layers) - 1
        raise
    return ({"input_shape": list(shapes[0][0]), "layers": normalized_layers, "loss": loss,
             "dtype": dtype, "seed": seed}, shapes)


def _check_output(last: Mapping, shape: tuple[int, ...], loss: str, where: str) -> None:
    """The last layer fits the loss: a flat output, softmax for cross-entropy, sigmoid for
    binary cross-entropy."""
    if len(shape) != 1:
        raise SpecError(f"{where}: the network must end in a flat output (dense or flatten) for the "
                        f"loss, but ends in shape {list(shape)}")
    last_activation = last.get("activation")
    if loss == "cross_entropy" and last_activation != "softmax":
        raise SpecError(f"{where}: loss 'cross_entropy' needs a dense output layer with activation "
                        f"'softmax', got {last_activation or 'no activation'}")
    if loss == "binary_cross_entropy" and last_activation != "sigmoid":
        raise SpecError(f"{where}: loss 'binary_cross_entropy' needs an output layer with activation "
                        f"'sigmoid', got {last_activation or 'no activation'}")


def parameter_count(layer: Mapping, input_shape: tuple[int, ...]) -> int:
    """Weights and biases of one normalized layer fed ``input_shape``: conv F*C*HH*WW + F,
    dense units*in + units, none for pooling and flatten."""
    if layer["type"] == "conv":
        kernel = layer["kernel"]
        return layer["filters"] * (input_shape[0] * kernel[0] * kernel[1] + 1)
    if layer["type"] == "dense":
        return layer["units"] * (input_shape[0] + 1)
    return 0


def layer_names(layers: list[Mapping]) -> list[str]:
    """Each layer's name: its type numbered among layers of that type (conv1, maxpool1, conv2)."""
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        counts[layer["type"]] = counts.get(layer["type"], 0) + 1
        names.append(f"{layer['type']}{counts[layer['type']]}")
    return names


def _product(shape: tuple[int, ...]) -> int:
    count = 1
    for extent in shape:
        count *= extent
    return count
