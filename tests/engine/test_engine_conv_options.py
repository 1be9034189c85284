"""The conv layer's options: padding as large as or larger than the kernel, circular padding and the
true convolution (kernel rotated 180 degrees), against PyTorch float64 autograd, central
differences and the notes' formula written as loops."""

import numpy as np
import pytest

from engine import Network, SpecError
from engine.layers import circular_fold, circular_pad
from engine_testkit import (
    assert_grads_match_finite_differences,
    assert_trace_matches_torch,
    make_spec,
    mentions_layer,
    random_input,
    random_targets,
)

ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "identity"]


def random_conv_layer(rng, shape):
    """A random valid conv layer for an input of `shape` (C, H, W): rectangular kernels, strides
    up to 3, zero padding up to the kernel plus 2 (often >= the kernel), circular padding up to
    the input side, either operation."""
    _, height, width = shape
    mode = str(rng.choice(["zeros", "circular"]))
    while True:
        kernel = [int(k) for k in rng.integers(1, 5, size=2)]
        stride = [int(s) for s in rng.integers(1, 4, size=2)]
        limits = [k + 2 for k in kernel] if mode == "zeros" else [min(height, kernel[0] + 2),
                                                                   min(width, kernel[1] + 2)]
        padding = [int(rng.integers(0, limit + 1)) for limit in limits]
        fits = all(k <= size + 2 * p and (size + 2 * p - k) % s == 0
                   for size, k, s, p in zip((height, width), kernel, stride, padding))
        if fits:
            break
    return {"type": "conv", "filters": int(rng.integers(1, 4)), "kernel": kernel, "stride": stride,
            "padding": padding, "padding_mode": mode,
            "operation": str(rng.choice(["cross_correlation", "convolution"])),
            "activation": str(rng.choice(ACTIVATIONS))}


def random_conv_spec(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 4)), int(rng.integers(2, 9)), int(rng.integers(2, 9)))
    layers = []
    current = shape
    for _ in range(int(rng.integers(1, 3))):
        layer = random_conv_layer(rng, current)
        layers.append(layer)
        current = Network.from_spec(make_spec(shape, layers + [{"type": "flatten"}], loss="mse")).layer_shapes[-2][1]
    layers += [{"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"}]
    return make_spec(shape, layers, seed=seed)


@pytest.mark.parametrize("seed", range(40))
def test_random_conv_options_match_pytorch_autograd(seed):
    spec = random_conv_spec(seed)
    rng = np.random.default_rng(100 + seed)
    batch = int(rng.integers(1, 4))
    net = Network.from_spec(spec)
    for params in net.params:  # non-zero biases: no unit sits exactly on relu's kink
        if "b" in params:
            params["b"][...] = rng.normal(0.0, 0.5, size=params["b"].shape)
    assert_trace_matches_torch(spec, random_input(spec, batch, rng), random_targets(spec, batch, rng),
                               net=net)


# (layer options, input shape): each option alone and together, with strides that skip inputs.
NAMED_CASES = {
    "padding equal to the kernel": ({"kernel": 3, "padding": 3}, (2, 5, 5)),
    "padding far beyond the kernel": ({"kernel": [2, 3], "padding": [5, 4], "stride": [3, 1]}, (1, 4, 6)),
    "circular": ({"kernel": 3, "padding": 1, "padding_mode": "circular"}, (2, 6, 5)),
    "circular padding of the whole side": ({"kernel": 2, "padding": [4, 3], "padding_mode": "circular",
                                            "stride": 2}, (1, 4, 4)),
    "true convolution": ({"kernel": [2, 3], "operation": "convolution", "stride": [2, 1]}, (3, 8, 6)),
    "true convolution, circular, padding beyond the kernel": (
        {"kernel": 2, "padding": 3, "padding_mode": "circular", "operation": "convolution"}, (2, 4, 5)),
    "true convolution with zero padding beyond the kernel": (
        {"kernel": 3, "padding": 5, "operation": "convolution", "stride": 3}, (1, 5, 5)),
}


def named_spec(options, shape, loss="mse", dtype="float64"):
    conv = {"type": "conv", "filters": 2, "activation": "tanh", **options}
    out = "identity" if loss == "mse" else "softmax"
    return make_spec(shape, [conv, {"type": "flatten"}, {"type": "dense", "units": 3, "activation": out}],
                     loss=loss, dtype=dtype)


@pytest.mark.parametrize("case", sorted(NAMED_CASES))
def test_named_conv_options_match_pytorch_and_central_differences(case):
    spec = named_spec(*NAMED_CASES[case])
    rng = np.random.default_rng(7)
    x, y = random_input(spec, 2, rng), random_targets(spec, 2, rng)
    assert_trace_matches_torch(spec, x, y)
    assert_grads_match_finite_differences(Network.from_spec(spec), x, y)


def test_large_maps_take_the_other_dx_path_and_still_match_pytorch():
    # big enough that the kernel's dx goes by col2im rather than one full convolution
    spec = make_spec((3, 30, 30), [
        {"type": "conv", "filters": 8, "kernel": 5, "padding": 2, "padding_mode": "circular",
         "operation": "convolution", "activation": "relu"},
        {"type": "conv", "filters": 4, "kernel": 3, "padding": 4, "operation": "convolution",
         "activation": "tanh"},
        {"type": "flatten"}, {"type": "dense", "units": 4, "activation": "softmax"}])
    rng = np.random.default_rng(3)
    assert_trace_matches_torch(spec, random_input(spec, 3, rng), random_targets(spec, 3, rng))


def notes_conv_naive(x, w, b, stride, padding, mode, operation):
    """The design's formula as loops: z[n,f,i,j] = b[f] + sum x_pad[n,c,i*sh+r,j*sw+q] * K[f,c,r,q]
    with K = W for cross-correlation and K[r, q] = W[HH-1-r, WW-1-q] for the true convolution."""
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    (sh, sw), (ph, pw) = stride, padding
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode="wrap" if mode == "circular" else "constant")
    Ho, Wo = (H + 2 * ph - HH) // sh + 1, (W + 2 * pw - WW) // sw + 1
    z = np.zeros((N, F, Ho, Wo))
    for n, f, i, j in np.ndindex(N, F, Ho, Wo):
        total = b[f]
        for c, r, q in np.ndindex(C, HH, WW):
            weight = w[f, c, HH - 1 - r, WW - 1 - q] if operation == "convolution" else w[f, c, r, q]
            total += x_pad[n, c, i * sh + r, j * sw + q] * weight
        z[n, f, i, j] = total
    return z


@pytest.mark.parametrize("case", sorted(NAMED_CASES))
def test_layer_forward_equals_the_notes_formula_as_loops(case):
    options, shape = NAMED_CASES[case]
    spec = named_spec(options, shape)
    net = Network.from_spec(spec)
    conv = net.spec["layers"][0]
    x = random_input(spec, 2, np.random.default_rng(1))
    trace = net.trace(x, np.zeros((2, 3)))
    expected = notes_conv_naive(x, net.params[0]["W"], net.params[0]["b"], conv["stride"], conv["padding"],
                                conv["padding_mode"], conv["operation"])
    np.testing.assert_allclose(trace.layers[0].z, expected, rtol=1e-12, atol=1e-12)


def test_true_convolution_of_a_rotated_kernel_equals_cross_correlation():
    """Rotating the kernel and switching the operation gives the same z and the rotated dW."""
    shape = (2, 6, 6)
    plain = Network.from_spec(named_spec({"kernel": [2, 3], "padding": 1}, shape))
    true = Network.from_spec(named_spec({"kernel": [2, 3], "padding": 1, "operation": "convolution"}, shape))
    true.load_state_dict(plain.state_dict())
    true.params[0]["W"][...] = plain.params[0]["W"][:, :, ::-1, ::-1]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2,) + shape), rng.normal(size=(2, 3))
    a, b = plain.trace(x, y), true.trace(x, y)
    np.testing.assert_allclose(b.layers[0].z, a.layers[0].z, rtol=1e-12)
    np.testing.assert_allclose(b.input_grad, a.input_grad, rtol=1e-12)
    np.testing.assert_allclose(b.layers[0].grads["W"], a.layers[0].grads["W"][:, :, ::-1, ::-1], rtol=1e-12)
    np.testing.assert_array_equal(b.layers[0].params["W"], true.params[0]["W"])  # the trace keeps W as given


@pytest.mark.parametrize("padding", [(0, 0), (1, 0), (2, 3), (4, 3)])
def test_circular_fold_is_the_adjoint_of_circular_pad(padding):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 4, 3))
    padded = circular_pad(x, padding)
    assert padded.shape == (2, 3, 4 + 2 * padding[0], 3 + 2 * padding[1])
    g = rng.normal(size=padded.shape)
    # <pad(x), g> = <x, fold(g)> for every x and g: the fold is exactly the pad's backward
    assert np.vdot(padded, g) == pytest.approx(np.vdot(x, circular_fold(g, padding)), rel=1e-12)


def test_circular_padding_wraps_the_far_side_around():
    x = np.arange(12.0).reshape(1, 1, 3, 4)
    padded = circular_pad(x, (1, 2))[0, 0]
    np.testing.assert_array_equal(padded[0, 2:6], x[0, 0, 2])     # the row above is the last row
    np.testing.assert_array_equal(padded[4, 2:6], x[0, 0, 0])     # the row below is the first
    np.testing.assert_array_equal(padded[1:4, 0:2], x[0, 0, :, 2:4])  # the columns left are the last two


def test_float32_network_with_every_option_stays_close_to_float64():
    options, shape = NAMED_CASES["true convolution, circular, padding beyond the kernel"]
    single = Network.from_spec(named_spec(options, shape, dtype="float32"))
    double = Network.from_spec(named_spec(options, shape))
    double.load_state_dict({k: v.astype(np.float64) for k, v in single.state_dict().items()})
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(2,) + shape).astype(np.float32), rng.normal(size=(2, 3))
    a, b = single.trace(x, y), double.trace(x, y)
    assert a.layers[0].z.dtype == np.float32 and a.input_grad.dtype == np.float32
    assert a.layers[0].grads["W"].dtype == np.float32
    np.testing.assert_allclose(a.input_grad, b.input_grad, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a.layers[0].grads["W"], b.layers[0].grads["W"], rtol=1e-4, atol=1e-6)


def test_normalized_spec_lists_both_options_and_round_trips():
    net = Network.from_spec(named_spec({"kernel": 3, "padding": 5, "padding_mode": "circular",
                                        "operation": "convolution"}, (1, 6, 6)))
    conv = net.spec["layers"][0]
    assert conv["padding"] == [5, 5] and conv["padding_mode"] == "circular" and conv["operation"] == "convolution"
    assert net.layer_shapes[0][1] == (2, 14, 14)
    assert Network.from_spec(net.spec).spec == net.spec


SPEC_ERRORS = {
    "kernel larger than the padded input": ({"kernel": 8, "padding": 1}, (1, 5, 5), ["kernel", "larger"]),
    "stride that does not tile the padded input": ({"kernel": 3, "padding": 4, "stride": 2}, (1, 6, 6),
                                                   ["stride", "divide"]),
    "circular padding beyond the input height": ({"kernel": 2, "padding": [5, 1], "padding_mode": "circular"},
                                                 (1, 4, 6), ["circular", "height", "4"]),
    "circular padding beyond the input width": ({"kernel": 2, "padding": [1, 4], "padding_mode": "circular"},
                                                (1, 6, 3), ["circular", "width", "3"]),
    "unknown padding mode": ({"kernel": 2, "padding_mode": "reflect"}, (1, 4, 4), ["padding_mode", "zeros",
                                                                                    "circular"]),
    "unknown operation": ({"kernel": 2, "operation": "correlation"}, (1, 4, 4),
                          ["operation", "cross_correlation", "convolution"]),
    "operation of the wrong type": ({"kernel": 2, "operation": 1}, (1, 4, 4), ["operation"]),
}


@pytest.mark.parametrize("case", sorted(SPEC_ERRORS))
def test_bad_conv_options_raise_spec_error_naming_layer_and_problem(case):
    options, shape, words = SPEC_ERRORS[case]
    with pytest.raises(SpecError) as error:
        Network.from_spec(named_spec(options, shape))
    message = str(error.value)
    assert mentions_layer(message, 0), message
    for word in words:
        assert word in message, (word, message)


def test_scratch_shared_by_float64_and_float32_passes_keeps_each_exact():
    """One thread's scratch serves networks of both dtypes (a float64 preset beside float32 ones,
    gradcheck's float64 passes): a buffer one dtype left must never be read as the other's zeros."""
    from engine import kernels
    from engine.scratch import Scratch

    take = Scratch().taker(0)
    rng = np.random.default_rng(0)
    x, w, delta = rng.normal(size=(2, 2, 8, 8)), rng.normal(size=(3, 2, 3, 3)), rng.normal(size=(2, 3, 8, 8))
    expected = kernels.conv_backward_naive(delta, x, w, (1, 1), (1, 1))
    for dtype in (np.float64, np.float32, np.float64):
        got = kernels.conv_backward(*(a.astype(dtype) for a in (delta, x, w)), (1, 1), (1, 1), scratch=take)
        for ours, theirs in zip(got, expected):
            np.testing.assert_allclose(ours, theirs, rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-4)
