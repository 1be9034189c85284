"""Property tests over random valid specs: gradients match PyTorch and central differences, shapes
are consistent, and a trace never changes the network."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Network
from engine_testkit import (
    assert_grads_match_finite_differences,
    assert_trace_matches_torch,
    layer_output_shape,
    make_spec,
    random_input,
    random_targets,
)

HIDDEN = ["relu", "leaky_relu", "sigmoid", "tanh", "identity"]
PROPERTY_SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def window_along_axis(draw, extent, max_kernel, allow_padding):
    """(kernel, stride, padding) for one axis such that the windows tile the padded extent."""
    padding = draw(st.integers(0, 2)) if allow_padding else 0
    kernel = draw(st.integers(max(1, padding + 1), max(padding + 1, min(max_kernel, extent + 2 * padding))))
    span = extent + 2 * padding - kernel
    strides = [s for s in range(1, 4) if span % s == 0]
    return kernel, draw(st.sampled_from(strides)), padding


@st.composite
def valid_specs(draw):
    channels = draw(st.integers(1, 3))
    input_shape = (channels, draw(st.integers(3, 9)), draw(st.integers(3, 9)))
    shape = input_shape
    layers = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["conv", "maxpool", "avgpool"]))
        if kind == "conv":
            (kh, sh, ph), (kw, sw, pw) = (draw(window_along_axis(shape[1], 4, True)),
                                          draw(window_along_axis(shape[2], 4, True)))
            if kh <= ph or kw <= pw:
                continue
            layer = {"type": "conv", "filters": draw(st.integers(1, 3)), "kernel": [kh, kw], "stride": [sh, sw],
                     "padding": [ph, pw], "activation": draw(st.sampled_from(HIDDEN))}
        else:
            (kh, sh, _), (kw, sw, _) = (draw(window_along_axis(shape[1], 3, False)),
                                        draw(window_along_axis(shape[2], 3, False)))
            layer = {"type": kind, "size": [kh, kw], "stride": [sh, sw]}
        layers.append(layer)
        shape = layer_output_shape(shape, layer)
    layers.append({"type": "flatten"})
    for _ in range(draw(st.integers(0, 2))):
        layers.append({"type": "dense", "units": draw(st.integers(1, 5)), "activation": draw(st.sampled_from(HIDDEN))})
    loss = draw(st.sampled_from(["cross_entropy", "binary_cross_entropy", "mse"]))
    if loss == "cross_entropy":
        layers.append({"type": "dense", "units": draw(st.integers(2, 4)), "activation": "softmax"})
    elif loss == "binary_cross_entropy":
        layers.append({"type": "dense", "units": draw(st.integers(1, 3)), "activation": "sigmoid"})
    elif draw(st.booleans()):
        layers.append({"type": "dense", "units": draw(st.integers(1, 3)), "activation": draw(st.sampled_from(HIDDEN))})
    return make_spec(input_shape, layers, loss=loss, seed=draw(st.integers(0, 100)))


def example(spec, batch, seed):
    rng = np.random.default_rng(seed)
    return random_input(spec, batch, rng), random_targets(spec, batch, rng)


@PROPERTY_SETTINGS
@given(spec=valid_specs(), batch=st.integers(1, 3), seed=st.integers(0, 1000))
def test_random_valid_spec_trace_matches_torch(spec, batch, seed):
    assert_trace_matches_torch(spec, *example(spec, batch, seed))


@PROPERTY_SETTINGS
@given(spec=valid_specs(), batch=st.integers(1, 2), seed=st.integers(0, 1000))
def test_random_valid_spec_gradients_match_central_differences(spec, batch, seed):
    assert_grads_match_finite_differences(Network.from_spec(spec), *example(spec, batch, seed), max_entries=12)


@PROPERTY_SETTINGS
@given(spec=valid_specs(), batch=st.integers(1, 3), seed=st.integers(0, 1000))
def test_random_valid_spec_shapes_are_consistent(spec, batch, seed):
    net = Network.from_spec(spec)
    x, y = example(spec, batch, seed)
    trace = net.trace(x, y)
    assert trace.input_grad.shape == x.shape
    assert len(trace.layers) == len(net.layer_shapes) == len(spec["layers"])
    for record, (in_shape, out_shape), params in zip(trace.layers, net.layer_shapes, net.params):
        assert record.input.shape == (batch,) + tuple(in_shape)
        for array in (record.z, record.a, record.delta):
            assert array.shape == (batch,) + tuple(out_shape), record.name
        assert {k: v.shape for k, v in record.grads.items()} == {k: v.shape for k, v in params.items()}
        if record.type == "maxpool":
            assert record.argmax.shape == record.z.shape
            plane = in_shape[1] * in_shape[2]
            assert record.argmax.min() >= 0 and record.argmax.max() < plane
            # the winner really holds the window's value
            flat_input = record.input.reshape(batch, in_shape[0], plane)
            winners = np.take_along_axis(flat_input, record.argmax.reshape(batch, in_shape[0], -1), axis=2)
            np.testing.assert_array_equal(winners.reshape(record.z.shape), record.z)
    assert net.forward(x).shape == (batch,) + tuple(net.layer_shapes[-1][1])


@PROPERTY_SETTINGS
@given(spec=valid_specs(), seed=st.integers(0, 1000))
def test_random_valid_spec_trace_does_not_change_params_input_or_earlier_traces(spec, seed):
    net = Network.from_spec(spec)
    x, y = example(spec, 2, seed)
    x_before, y_before = x.copy(), y.copy()
    params_before = [{k: v.copy() for k, v in p.items()} for p in net.params]
    live = [{k: v for k, v in p.items()} for p in net.params]
    first = net.trace(x, y)
    first_arrays = [[np.array(v, copy=True) for v in (r.z, r.a, r.delta, *r.grads.values())] for r in first.layers]
    net.trace(*example(spec, 2, seed + 1))  # other values through the same scratch buffers
    # nothing the first trace handed out was scratch memory that the other trace reused
    for record, arrays in zip(first.layers, first_arrays):
        for kept, copied in zip((record.z, record.a, record.delta, *record.grads.values()), arrays):
            np.testing.assert_array_equal(kept, copied, err_msg=record.name)
    second = net.trace(x, y)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)
    for p, before, arrays in zip(net.params, params_before, live):
        for key in p:
            assert p[key] is arrays[key]
            np.testing.assert_array_equal(p[key], before[key])
    assert first.loss == second.loss
    np.testing.assert_array_equal(first.input_grad, second.input_grad)
    for record, before in zip(first.layers, params_before):
        for key in before:
            np.testing.assert_array_equal(record.params[key], before[key])


@PROPERTY_SETTINGS
@given(spec=valid_specs(), batch=st.integers(1, 3), seed=st.integers(0, 1000))
def test_random_valid_spec_in_float32_agrees_with_float64(spec, batch, seed):
    x, y = example(spec, batch, seed)
    wide = Network.from_spec(spec)
    narrow = Network.from_spec(dict(spec, dtype="float32"))
    t64, t32 = wide.trace(x, y), narrow.trace(x, y)
    assert abs(t32.loss - t64.loss) <= 1e-4 * max(1.0, abs(t64.loss))

    def assert_close(ours, reference, what):
        assert ours.dtype == np.float32, what
        scale = max(1e-3, float(np.abs(reference).max()))
        np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-3 * scale, err_msg=what)

    assert_close(t32.input_grad, t64.input_grad, "input_grad")
    for r32, r64 in zip(t32.layers, t64.layers):
        assert_close(r32.a, r64.a, f"{r32.name} a")
        assert_close(r32.delta, r64.delta, f"{r32.name} delta")
        for key in r64.grads:
            assert_close(r32.grads[key], r64.grads[key], f"{r32.name} d{key}")
