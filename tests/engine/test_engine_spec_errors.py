"""Every way a spec can be wrong raises SpecError naming the layer and the problem."""

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Network, SpecError
from engine_testkit import mentions_layer


def base_spec():
    return {
        "input_shape": [1, 8, 8],
        "layers": [
            {"type": "conv", "filters": 2, "kernel": 3, "stride": 1, "padding": 1, "activation": "relu"},
            {"type": "maxpool", "size": 2, "stride": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 5, "activation": "relu"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ],
        "loss": "cross_entropy",
        "dtype": "float32",
        "seed": 0,
    }


def with_layer(index, **changes):
    spec = base_spec()
    spec["layers"][index].update(changes)
    return spec


def replace_layers(*layers, input_shape=(1, 8, 8), loss="cross_entropy"):
    spec = base_spec()
    spec["layers"] = list(layers)
    spec["input_shape"] = list(input_shape)
    spec["loss"] = loss
    return spec


def spec_error(spec) -> str:
    with pytest.raises(SpecError) as info:
        Network.from_spec(spec)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def assert_names(message, *words):
    lowered = message.lower()
    for word in words:
        assert word.lower() in lowered, f"{word!r} not in {message!r}"


def test_the_base_spec_is_valid():
    net = Network.from_spec(base_spec())
    assert len(net.params) == 5


SOFTMAX_OUT = {"type": "dense", "units": 3, "activation": "softmax"}

# (spec, layer index named in the message, words the message must contain)
LAYER_CASES = {
    "unknown layer key": (with_layer(0, filter=6), 0, ["unknown", "filter"]),
    "unknown layer type": (with_layer(1, type="dropout"), 1, ["unknown", "dropout"]),
    "unknown activation": (with_layer(3, activation="swish"), 3, ["swish"]),
    "kernel larger than padded input": (with_layer(0, kernel=11, padding=1), 0, ["kernel", "larger"]),
    "rectangular kernel too wide": (with_layer(0, kernel=[3, 12], padding=[1, 1]), 0, ["kernel", "width"]),
    "pool window does not divide": (
        replace_layers({"type": "maxpool", "size": 2}, {"type": "flatten"}, SOFTMAX_OUT, input_shape=(1, 5, 5)),
        0, ["divide"]),
    "avgpool stride does not divide": (
        replace_layers({"type": "avgpool", "size": 3, "stride": 2}, {"type": "flatten"}, SOFTMAX_OUT,
                       input_shape=(1, 6, 6)), 0, ["divide"]),
    "pool window larger than input": (
        replace_layers({"type": "maxpool", "size": 9}, {"type": "flatten"}, SOFTMAX_OUT), 0, ["larger"]),
    "conv stride does not divide": (with_layer(0, stride=3, padding=1), 0, ["stride", "divide"]),
    "softmax not last": (with_layer(3, activation="softmax"), 3, ["softmax", "last"]),
    "softmax without cross_entropy": (
        dict(base_spec(), loss="mse"), 4, ["softmax", "cross_entropy"]),
    "dense on a 3-D map without flatten": (
        replace_layers({"type": "conv", "filters": 2, "kernel": 3}, SOFTMAX_OUT), 1, ["flatten"]),
    "conv after flatten": (
        replace_layers({"type": "flatten"}, {"type": "conv", "filters": 2, "kernel": 1}, SOFTMAX_OUT), 1, ["3-d"]),
    "pool after flatten": (
        replace_layers({"type": "flatten"}, {"type": "maxpool", "size": 1}, SOFTMAX_OUT), 1, ["3-d"]),
    "absurd filter count": (with_layer(0, filters=10**7), 0, ["filters"]),
    "absurd unit count": (with_layer(3, units=10**9), 3, ["units"]),
    "absurd parameter total": (
        replace_layers({"type": "flatten"}, {"type": "dense", "units": 16384, "activation": "relu"},
                       {"type": "dense", "units": 16384, "activation": "relu"}, SOFTMAX_OUT), 2, ["parameters"]),
    "absurd feature-map total": (
        replace_layers(*[{"type": "conv", "filters": 1024, "kernel": 1}] * 20, {"type": "flatten"}, SOFTMAX_OUT,
                       input_shape=(1, 128, 128)), 0, ["limit"]),
    "absurd im2col matrix": (
        replace_layers({"type": "conv", "filters": 1, "kernel": 64}, {"type": "flatten"}, SOFTMAX_OUT,
                       input_shape=(64, 128, 128)), 0, ["windows", "limit"]),
    "non-int filters": (with_layer(0, filters=2.5), 0, ["filters", "integer"]),
    "string filters": (with_layer(0, filters="6"), 0, ["filters", "integer"]),
    "bool filters": (with_layer(0, filters=True), 0, ["filters", "integer"]),
    "non-int kernel": (with_layer(0, kernel=3.0), 0, ["kernel", "integer"]),
    "kernel triple": (with_layer(0, kernel=[3, 3, 3]), 0, ["kernel", "pair"]),
    "negative padding": (with_layer(0, padding=-1), 0, ["padding"]),
    "circular padding wider than the input": (
        replace_layers({"type": "conv", "filters": 1, "kernel": 3, "padding": [1, 9], "padding_mode": "circular"},
                       {"type": "flatten"}, SOFTMAX_OUT), 0, ["circular", "padding", "width"]),
    "unknown padding mode": (with_layer(0, padding_mode="reflect"), 0, ["padding_mode", "reflect"]),
    "padding mode of the wrong type": (with_layer(0, padding_mode=["zeros"]), 0, ["padding_mode"]),
    "unknown conv operation": (with_layer(0, operation="deconvolution"), 0, ["operation", "deconvolution"]),
    "zero stride": (with_layer(0, stride=0), 0, ["stride"]),
    "zero pool size": (with_layer(1, size=0), 1, ["size"]),
    "zero filters": (with_layer(0, filters=0), 0, ["filters"]),
    "zero units": (with_layer(3, units=0), 3, ["units"]),
    "conv without filters": (replace_layers({"type": "conv", "kernel": 3}, {"type": "flatten"}, SOFTMAX_OUT),
                             0, ["filters"]),
    "conv without kernel": (replace_layers({"type": "conv", "filters": 3}, {"type": "flatten"}, SOFTMAX_OUT),
                            0, ["kernel"]),
    "pool without size": (replace_layers({"type": "maxpool"}, {"type": "flatten"}, SOFTMAX_OUT), 0, ["size"]),
    "layer not an object": (replace_layers({"type": "flatten"}, "dense", SOFTMAX_OUT), 1, ["object"]),
    "layer without type": (replace_layers({"filters": 3}, SOFTMAX_OUT), 0, ["type"]),
    "cross_entropy output without softmax": (
        with_layer(4, activation="sigmoid"), 4, ["cross_entropy", "softmax"]),
    "binary_cross_entropy output without sigmoid": (
        replace_layers({"type": "flatten"}, {"type": "dense", "units": 2, "activation": "tanh"},
                       loss="binary_cross_entropy"), 1, ["sigmoid"]),
    "network ending in a 3-D map": (
        replace_layers({"type": "conv", "filters": 2, "kernel": 3}, loss="mse"), 0, ["flat"]),
    "softmax on a single unit": (replace_layers({"type": "flatten"}, {"type": "dense", "units": 1,
                                                                     "activation": "softmax"}), 1, ["softmax"]),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_spec_error_names_the_layer_and_the_problem(case):
    spec, index, words = LAYER_CASES[case]
    message = spec_error(spec)
    assert mentions_layer(message, index), message
    assert_names(message, *words)


def test_dense_layer_missing_units_names_the_layer():
    spec = base_spec()
    del spec["layers"][3]["units"]
    message = spec_error(spec)
    assert mentions_layer(message, 3), message
    assert_names(message, "units")


def test_unknown_layer_type_names_the_layer_and_lists_the_valid_types():
    message = spec_error(with_layer(2, type="Conv2D"))
    assert mentions_layer(message, 2)
    assert_names(message, "Conv2D", "conv", "maxpool", "avgpool", "flatten", "dense")


TOP_CASES = {
    "spec not an object": ([1, 2, 3], ["object"]),
    "unknown top-level key": (dict(base_spec(), optimizer="adam"), ["optimizer"]),
    "missing input_shape": ({k: v for k, v in base_spec().items() if k != "input_shape"}, ["input_shape"]),
    "missing layers": ({k: v for k, v in base_spec().items() if k != "layers"}, ["layers"]),
    "empty layers": (dict(base_spec(), layers=[]), ["layers"]),
    "layers not a list": (dict(base_spec(), layers={"type": "flatten"}), ["layers"]),
    "input_shape of two numbers": (dict(base_spec(), input_shape=[28, 28]), ["input_shape"]),
    "input_shape with zero": (dict(base_spec(), input_shape=[1, 0, 8]), ["input_shape"]),
    "input_shape of floats": (dict(base_spec(), input_shape=[1, 8.0, 8]), ["input_shape"]),
    "absurd input_shape": (dict(base_spec(), input_shape=[1, 100000, 100000]), ["input_shape"]),
    "bad dtype": (dict(base_spec(), dtype="float16"), ["dtype", "float16"]),
    "integer dtype": (dict(base_spec(), dtype="int32"), ["dtype"]),
    "bad loss": (dict(base_spec(), loss="hinge"), ["loss", "hinge"]),
    "negative seed": (dict(base_spec(), seed=-1), ["seed"]),
    "float seed": (dict(base_spec(), seed=1.5), ["seed"]),
    "too many layers": (dict(base_spec(), layers=[{"type": "conv", "filters": 1, "kernel": 1}] * 1000
                             + [{"type": "flatten"}, SOFTMAX_OUT]), ["layers"]),
}


@pytest.mark.parametrize("case", sorted(TOP_CASES))
def test_top_level_spec_error_names_the_problem(case):
    spec, words = TOP_CASES[case]
    assert_names(spec_error(spec), *words)


def test_spec_validation_does_not_modify_the_callers_spec():
    spec = base_spec()
    original = copy.deepcopy(spec)
    Network.from_spec(spec)
    assert spec == original
    broken = with_layer(0, kernel=11)
    original_broken = copy.deepcopy(broken)
    spec_error(broken)
    assert broken == original_broken


def test_the_first_wrong_layer_is_the_one_reported():
    spec = base_spec()
    spec["layers"][1]["size"] = 0
    spec["layers"][3]["units"] = -2
    assert mentions_layer(spec_error(spec), 1)


def test_normalized_spec_expands_defaults_and_pairs():
    net = Network.from_spec({"input_shape": [1, 6, 6], "layers": [
        {"type": "conv", "filters": 2, "kernel": 3}, {"type": "maxpool", "size": 2},
        {"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"}]})
    conv, pool = net.spec["layers"][0], net.spec["layers"][1]
    assert conv["kernel"] == [3, 3] and conv["stride"] == [1, 1] and conv["padding"] == [0, 0]
    assert conv["padding_mode"] == "zeros" and conv["operation"] == "cross_correlation"
    assert pool["size"] == [2, 2] and pool["stride"] == [2, 2]
    assert net.spec["dtype"] == "float32" and net.spec["loss"] == "cross_entropy"
    assert net.dtype == np.float32
    assert Network.from_spec(net.spec).spec == net.spec
    assert net.layer_shapes == [((1, 6, 6), (2, 4, 4)), ((2, 4, 4), (2, 2, 2)), ((2, 2, 2), (8,)), ((8,), (3,))]


JUNK = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=True), st.text(max_size=6),
                 st.lists(st.integers(-2, 9), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_spec_with_any_junk_value_builds_or_raises_spec_error_only(data):
    spec = base_spec()
    where = data.draw(st.sampled_from(["top", "layer"]))
    if where == "top":
        key = data.draw(st.sampled_from(sorted(spec) + ["extra"]))
        spec[key] = data.draw(JUNK)
    else:
        layer = spec["layers"][data.draw(st.integers(0, len(spec["layers"]) - 1))]
        key = data.draw(st.sampled_from(sorted(layer) + ["kernel", "stride", "padding", "padding_mode", "operation",
                                                         "size", "units", "extra"]))
        layer[key] = data.draw(JUNK)
    try:
        net = Network.from_spec(spec)
    except SpecError as error:
        assert str(error)
    else:
        assert len(net.params) == len(spec["layers"])


@pytest.mark.parametrize(("index", "changes"), [
    (0, {"kernel": 11}), (1, {"size": 3}), (3, {"units": 0}), (3, {"activation": "softmax"}),
    (4, {"activation": "relu"}),
])
def test_spec_error_carries_the_index_of_the_layer_it_names(index, changes):
    with pytest.raises(SpecError) as caught:
        Network.from_spec(with_layer(index, **changes))
    assert caught.value.layer == index and str(caught.value).startswith(f"layer {index} ")


def test_spec_error_of_the_whole_spec_names_no_layer():
    spec = base_spec()
    spec["loss"] = "hinge"
    with pytest.raises(SpecError) as caught:
        Network.from_spec(spec)
    assert caught.value.layer is None
