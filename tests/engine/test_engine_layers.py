"""Every layer, activation and loss against PyTorch autograd and central differences (float64)."""

import numpy as np
import pytest

from engine import Network
from engine_testkit import (
    LENET5_LAYERS,
    assert_grads_match_finite_differences,
    assert_trace_matches_torch,
    make_spec,
    random_input,
    random_targets,
    torch_trace,
)

ACTIVATIONS = ["relu", "leaky_relu", "sigmoid", "tanh", "identity"]

# (channels, height, width, filters, kernel, stride, padding): strides, paddings, rectangular
# kernels and rectangular inputs, 1x1 kernels, a kernel as big as the input, "same" padding.
CONV_CASES = [
    (1, 5, 5, 1, 3, 1, 0),
    (3, 7, 7, 4, 3, 2, 1),
    (2, 6, 8, 3, [2, 3], 1, [0, 1]),
    (2, 9, 7, 2, [3, 2], [3, 1], 0),
    (1, 4, 4, 2, 4, 1, 0),
    (3, 5, 5, 2, 5, 1, 2),
    (2, 6, 6, 3, 2, 2, 0),
    (1, 3, 3, 1, 3, 1, 2),
    (2, 7, 5, 2, 1, 2, 0),
    (4, 8, 9, 5, 3, [1, 3], [1, 0]),
]

# (channels, height, width, size, stride): non-overlapping, overlapping, rectangular, global,
# size 1, and a stride larger than the window (inputs skipped).
POOL_CASES = [
    (1, 4, 4, 2, 2),
    (2, 5, 5, 3, 1),
    (1, 6, 6, 2, 1),
    (3, 7, 7, 3, 2),
    (2, 6, 8, [2, 4], [2, 4]),
    (1, 6, 6, [3, 2], [1, 2]),
    (2, 4, 4, 4, 4),
    (1, 5, 5, 1, 1),
    (3, 8, 8, 2, 3),
]


def conv_spec(case, activation, seed=0):
    channels, height, width, filters, kernel, stride, padding = case
    layers = [
        {"type": "conv", "filters": filters, "kernel": kernel, "stride": stride, "padding": padding,
         "activation": activation},
        {"type": "flatten"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
    return make_spec([channels, height, width], layers, seed=seed)


def pool_spec(case, kind, conv_before):
    channels, height, width, size, stride = case
    layers = [{"type": kind, "size": size, "stride": stride}, {"type": "flatten"},
              {"type": "dense", "units": 4, "activation": "softmax"}]
    if conv_before:
        layers.insert(0, {"type": "conv", "filters": channels, "kernel": 1, "activation": "tanh"})
    return make_spec([channels, height, width], layers, seed=3)


def run_case(spec, batch, check):
    rng = np.random.default_rng(batch)
    x = random_input(spec, batch, rng)
    y = random_targets(spec, batch, rng)
    if check == "torch":
        assert_trace_matches_torch(spec, x, y)
    else:
        assert_grads_match_finite_differences(Network.from_spec(spec), x, y, max_entries=40)


@pytest.mark.parametrize("check", ["torch", "finite_differences"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("case_index", range(len(CONV_CASES)))
def test_conv_layer_forward_and_gradients_are_exact(case_index, batch, check):
    activation = ACTIVATIONS[case_index % len(ACTIVATIONS)]
    run_case(conv_spec(CONV_CASES[case_index], activation, seed=case_index), batch, check)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_conv_layer_with_each_activation_matches_torch(activation):
    run_case(conv_spec(CONV_CASES[1], activation), 2, "torch")


@pytest.mark.parametrize("check", ["torch", "finite_differences"])
@pytest.mark.parametrize("conv_before", [False, True])
@pytest.mark.parametrize("kind", ["maxpool", "avgpool"])
@pytest.mark.parametrize("case_index", range(len(POOL_CASES)))
def test_pool_layer_forward_and_gradients_are_exact(case_index, kind, conv_before, check):
    run_case(pool_spec(POOL_CASES[case_index], kind, conv_before), 2, check)


@pytest.mark.parametrize("check", ["torch", "finite_differences"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_layer_with_each_activation_is_exact(activation, check):
    layers = [{"type": "flatten"}, {"type": "dense", "units": 5, "activation": activation},
              {"type": "dense", "units": 4, "activation": "softmax"}]
    run_case(make_spec([2, 3, 2], layers, seed=11), 3, check)


@pytest.mark.parametrize("check", ["torch", "finite_differences"])
@pytest.mark.parametrize(
    "loss, output_activation",
    [("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid")]
    + [("mse", activation) for activation in ACTIVATIONS],
)
def test_each_loss_with_its_output_activation_is_exact(loss, output_activation, check):
    layers = [{"type": "conv", "filters": 2, "kernel": 2, "activation": "relu"}, {"type": "flatten"},
              {"type": "dense", "units": 3, "activation": output_activation}]
    run_case(make_spec([1, 4, 4], layers, loss=loss, seed=5), 4, check)


def test_two_pool_layers_in_a_row_route_deltas_like_torch():
    layers = [{"type": "maxpool", "size": 2, "stride": 1}, {"type": "avgpool", "size": 2},
              {"type": "flatten"}, {"type": "dense", "units": 2, "activation": "softmax"}]
    run_case(make_spec([2, 5, 5], layers), 3, "torch")


def test_stacked_convs_with_padding_and_stride_match_torch_and_finite_differences():
    layers = [
        {"type": "conv", "filters": 3, "kernel": 3, "stride": 1, "padding": 1, "activation": "leaky_relu"},
        {"type": "maxpool", "size": 2},
        {"type": "conv", "filters": 4, "kernel": [2, 3], "stride": [1, 2], "padding": [0, 1], "activation": "relu"},
        {"type": "avgpool", "size": [1, 2], "stride": [1, 1]},
        {"type": "flatten"},
        {"type": "dense", "units": 6, "activation": "tanh"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
    spec = make_spec([2, 8, 10], layers, seed=9)
    run_case(spec, 2, "torch")
    run_case(spec, 2, "finite_differences")


def test_lenet5_trace_matches_torch_at_float64():
    spec = make_spec([1, 28, 28], LENET5_LAYERS, seed=0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(5, 1, 28, 28))
    assert_trace_matches_torch(spec, x, rng.integers(0, 10, size=5))


def test_tiny_preset_network_matches_torch_and_finite_differences():
    layers = [{"type": "conv", "filters": 2, "kernel": 3, "activation": "relu"}, {"type": "maxpool", "size": 2},
              {"type": "flatten"}, {"type": "dense", "units": 1, "activation": "sigmoid"}]
    spec = make_spec([1, 6, 6], layers, loss="binary_cross_entropy", seed=0)
    x = np.random.default_rng(4).uniform(0, 1, size=(2, 1, 6, 6))
    y = np.array([[1.0], [0.0]])
    net, _ = assert_trace_matches_torch(spec, x, y)
    assert_grads_match_finite_differences(net, x, y)


def test_grad_a_is_the_delta_before_the_activation_derivative():
    layers = [{"type": "conv", "filters": 2, "kernel": 3, "activation": "tanh"}, {"type": "flatten"},
              {"type": "dense", "units": 3, "activation": "sigmoid"}]
    spec = make_spec([1, 5, 5], layers, loss="mse")
    rng = np.random.default_rng(0)
    x, y = random_input(spec, 2, rng), random_targets(spec, 2, rng)
    net = Network.from_spec(spec)
    trace = net.trace(x, y)
    reference = torch_trace(spec, net.params, x, y)
    for ours, theirs in zip(trace.layers, reference.layers):
        if ours.type in ("conv", "dense"):
            np.testing.assert_allclose(ours.grad_a, theirs.a.grad.numpy(), rtol=1e-7, atol=1e-12)
