"""trace(..., keep_intermediates=False): a training step's trace. Its loss, each sample's loss,
output layer and weight gradients equal the full trace's (to rounding when the dense layers'
gradients are summed over blocks), for every kind of network, in one block, in
blocks of one sample, and dealt over two threads; it keeps nothing else, and nothing it returns
is overwritten by the next trace (the blocks' buffers are reused)."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from engine import Network, kernels, layers, network, scratch
from engine_testkit import LENET5_LAYERS, make_spec, random_input, random_targets, torch_trace, close
from test_engine_blocks import SPECS, every_sample_its_own_block, network_with_random_biases

# Networks with a ReLU below a max-pool (the pool applies the ReLU in a lean trace in blocks):
# windows of odd sizes and shapes, apart, overlapping, and with integer weights and inputs, whose
# many ties (and windows without a positive z) give z's and relu(z)'s max-pools different winners
RELU_POOL_SPECS = {
    "lenet5": SPECS["lenet5"],
    "odd and oblong windows": make_spec((2, 9, 12), [
        {"type": "conv", "filters": 3, "kernel": 3, "padding": 1, "activation": "relu"},
        {"type": "maxpool", "size": 3, "stride": 3},
        {"type": "conv", "filters": 4, "kernel": 2, "activation": "relu"},
        {"type": "maxpool", "size": [1, 3], "stride": [1, 3]},
        {"type": "flatten"},
        {"type": "dense", "units": 3, "activation": "softmax"}]),
    "windows apart and overlapping": make_spec((1, 8, 8), [
        {"type": "conv", "filters": 3, "kernel": 3, "padding": 1, "activation": "relu"},
        {"type": "maxpool", "size": 2, "stride": 3},
        {"type": "conv", "filters": 2, "kernel": 1, "activation": "relu"},
        {"type": "maxpool", "size": 2, "stride": 1},
        {"type": "flatten"},
        {"type": "dense", "units": 2, "activation": "identity"}], loss="mse"),
    "ties": make_spec((1, 8, 8), [
        {"type": "conv", "filters": 4, "kernel": 3, "padding": 1, "activation": "relu"},
        {"type": "maxpool", "size": 2, "stride": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 3, "activation": "softmax"}]),
}
# A max-pool above another activation pools its outputs as usual: these round different z to one
# value (ties z has not) or have no zero derivative where they lose.
OTHER_POOL_SPECS = {
    f"{activation} below a max-pool": make_spec((1, 6, 6), [
        {"type": "conv", "filters": 2, "kernel": 3, "padding": 1, "activation": activation},
        {"type": "maxpool", "size": 2, "stride": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 2, "activation": "softmax"}])
    for activation in ("leaky_relu", "tanh", "sigmoid")}

SPECS = {**SPECS, "ends in a reshape": make_spec((1, 4, 4), [
    {"type": "conv", "filters": 2, "kernel": 3, "padding": 1, "activation": "tanh"},
    {"type": "flatten"}], loss="mse"),
    **{f"relu below a max-pool, {name}": spec for name, spec in RELU_POOL_SPECS.items() if name != "lenet5"},
    **OTHER_POOL_SPECS}


def assert_training_step_of(lean, full, rtol):
    assert lean.loss == pytest.approx(full.loss, rel=rtol)
    np.testing.assert_allclose(lean.sample_losses, full.sample_losses, rtol=rtol)
    np.testing.assert_allclose(lean.output, full.output, rtol=rtol)
    mine, theirs = lean.layers[-1], full.layers[-1]
    np.testing.assert_allclose(mine.delta, theirs.delta, rtol=rtol, atol=1e-14)
    for ours, default in zip(lean.layers, full.layers, strict=True):
        assert ours.grads.keys() == default.grads.keys()
        for key, grad in ours.grads.items():
            # sums over blocks round differently: within rtol of the gradient's largest entry
            scale = float(np.abs(default.grads[key]).max())
            np.testing.assert_allclose(grad, default.grads[key], rtol=rtol, atol=max(1e-13, rtol * scale),
                                       err_msg=f"{ours.name} d{key}")
        for key, value in ours.params.items():
            np.testing.assert_array_equal(value, default.params[key])
    for record in lean.layers[:-1]:
        assert (record.input, record.z, record.a, record.delta, record.grad_a, record.argmax) == (None,) * 6
    assert lean.layers[-1].input is None


@pytest.mark.parametrize("blocks", ["one", "one a sample"])
@pytest.mark.parametrize("need_input_grad", [True, False])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_lean_trace_is_the_full_traces_training_step(name, need_input_grad, blocks, monkeypatch):
    spec = SPECS[name]
    rng = np.random.default_rng(11)
    net = network_with_random_biases(spec, rng, 0.5)
    x, y = random_input(spec, 5, rng), random_targets(spec, 5, rng)
    full = net.trace(x, y, need_input_grad=need_input_grad)
    if blocks != "one":
        every_sample_its_own_block(monkeypatch)
    lean = net.trace(x, y, need_input_grad=need_input_grad, keep_intermediates=False)
    assert_training_step_of(lean, full, rtol=1e-10)
    if need_input_grad:
        np.testing.assert_allclose(lean.input_grad, full.input_grad, rtol=1e-10, atol=1e-14)
    else:
        assert lean.input_grad is None


def test_a_lean_trace_in_blocks_matches_pytorch(monkeypatch):
    spec = SPECS["lenet5"]
    rng = np.random.default_rng(12)
    net = network_with_random_biases(spec, rng, 0.3)
    x, y = random_input(spec, 6, rng), random_targets(spec, 6, rng)
    monkeypatch.setattr(Network, "trace_blocks", lambda self, N: [(0, 2), (2, 4), (4, 6)])
    lean = net.trace(x, y, need_input_grad=False, keep_intermediates=False)
    reference = torch_trace(spec, net.params, x, y)
    close(lean.loss, reference.loss, what="loss")
    close(lean.output, reference.layers[-1].a.detach().numpy(), what="output")
    for i, (ours, theirs) in enumerate(zip(lean.layers, reference.layers)):
        for key, grad in ours.grads.items():
            close(grad, theirs.params[key].grad.numpy(), rtol=1e-10, what=f"layer {i} d{key}")


def test_lenet5_float32_batch_256_in_lean_blocks_equals_the_full_trace_to_rounding():
    spec = make_spec((1, 28, 28), LENET5_LAYERS, dtype="float32")
    net = Network.from_spec(spec)
    rng = np.random.default_rng(13)
    x, y = random_input(spec, 256, rng, dtype=np.float32), random_targets(spec, 256, rng)
    assert len(net.trace_blocks(256)) > 1
    full = net.trace(x, y, need_input_grad=False)
    lean = net.trace(x, y, need_input_grad=False, keep_intermediates=False)
    assert_training_step_of(lean, full, rtol=2e-5)


def test_lean_blocks_dealt_over_two_threads_give_the_one_thread_numbers(monkeypatch):
    spec = SPECS["lenet5"]
    net = network_with_random_biases(spec, np.random.default_rng(14), 0.5)
    rng = np.random.default_rng(15)
    x, y = random_input(spec, 7, rng), random_targets(spec, 7, rng)
    one = net.trace(x, y, need_input_grad=False, keep_intermediates=False)
    monkeypatch.setattr(network, "THREAD_BLOCK_MIN_BYTES", 0)
    monkeypatch.setattr(scratch, "POOL_BACKOFF_SECONDS", 0.0)
    monkeypatch.setattr(scratch, "_pool_backoff_until", 0.0)
    dealt = []
    real_over_threads = network.over_threads

    def recording(job, items, *args, **kwargs):
        dealt.append((len(items), network.kernel_threads()))
        return real_over_threads(job, items, *args, **kwargs)

    monkeypatch.setattr(network, "over_threads", recording)
    with threadpool_limits(limits=2, user_api="blas"):
        two = net.trace(x, y, need_input_grad=False, keep_intermediates=False)
    assert dealt[0][0] > 1 and dealt[0][1] == 2  # the blocks were dealt over two threads
    assert_training_step_of(two, one, rtol=1e-10)


def test_nothing_a_lean_trace_returns_is_overwritten_by_the_next(monkeypatch):
    every_sample_its_own_block(monkeypatch)
    spec = SPECS["lenet5"]
    net = Network.from_spec(spec)
    rng = np.random.default_rng(16)
    x, y = random_input(spec, 3, rng), random_targets(spec, 3, rng)
    first = net.trace(x, y, keep_intermediates=False)
    kept = [first.output.copy(), first.sample_losses.copy(), first.input_grad.copy(),
            *(grad.copy() for record in first.layers for grad in record.grads.values())]
    net.trace(random_input(spec, 3, rng), random_targets(spec, 3, rng), keep_intermediates=False)
    now = [first.output, first.sample_losses, first.input_grad,
           *(grad for record in first.layers for grad in record.grads.values())]
    for before, after in zip(kept, now, strict=True):
        np.testing.assert_array_equal(before, after)


def relu_pool_case(name, batch=5):
    """(network, x, y) for RELU_POOL_SPECS[name]: random biases, or for "ties" integer weights,
    biases and inputs in a few values, so that many z tie exactly (zeros among them)."""
    spec = RELU_POOL_SPECS[name]
    rng = np.random.default_rng(17)
    if name != "ties":
        net = network_with_random_biases(spec, rng, 0.5)
        return net, random_input(spec, batch, rng), random_targets(spec, batch, rng)
    net = Network.from_spec(spec)
    for layer_params in net.params:
        for key, value in layer_params.items():
            value[...] = rng.integers(-1, 2, size=value.shape)
    x = rng.integers(-1, 2, size=(batch,) + tuple(spec["input_shape"])).astype(np.float64)
    return net, x, random_targets(spec, batch, rng)


def test_a_lean_trace_lets_the_max_pool_apply_only_a_relu_directly_below_it():
    assert Network.from_spec(SPECS["lenet5"])._relu_in_pool == {0, 2}
    assert Network.from_spec(RELU_POOL_SPECS["odd and oblong windows"])._relu_in_pool == {0, 2}
    for spec in OTHER_POOL_SPECS.values():
        assert Network.from_spec(spec)._relu_in_pool == frozenset()


@pytest.mark.parametrize("blocks", [[(0, 5)], [(0, 2), (2, 3), (3, 5)]], ids=["one block", "three"])
@pytest.mark.parametrize("need_input_grad", [True, False])
@pytest.mark.parametrize("name", sorted(RELU_POOL_SPECS))
def test_the_relu_applied_by_the_max_pool_above_gives_exactly_the_same_numbers(name, need_input_grad, blocks,
                                                                               monkeypatch):
    # (in one block, without it, the lean trace is the whole-batch trace's code)
    net, x, y = relu_pool_case(name)
    monkeypatch.setattr(Network, "trace_blocks", lambda self, N: blocks)
    monkeypatch.setattr(network, "LEAN_ONE_BLOCK_MIN_BYTES", 0)  # these batches are small
    pooled_shapes = {index + 1: net.layers[index + 1].output_shape for index in net._relu_in_pool}
    derivative_shapes = []
    for index in net._relu_in_pool:
        real = net.layers[index].delta_from_grad_a

        def recording(grad_a, z, a, out=None, real=real, index=index):
            derivative_shapes.append((index, grad_a.shape[1:]))
            return real(grad_a, z, a, out=out)

        monkeypatch.setattr(net.layers[index], "delta_from_grad_a", recording)
    activated_shapes = []
    for module in (layers, network):
        real_activate = module.activate_into

        def recording_activation(name, z, out, real_activate=real_activate):
            activated_shapes.append((name, z.shape[1:]))
            return real_activate(name, z, out)

        monkeypatch.setattr(module, "activate_into", recording_activation)
    fused = net.trace(x, y, need_input_grad=need_input_grad, keep_intermediates=False)
    # relu and relu' ran on the pooled values only, once per block each
    assert sorted(derivative_shapes) == sorted((index - 1, shape) for index, shape in pooled_shapes.items()
                                               for _ in blocks)
    for index in net._relu_in_pool:
        assert ("relu", net.layers[index].output_shape) not in activated_shapes
        assert activated_shapes.count(("relu", net.layers[index + 1].output_shape)) >= len(blocks)
    monkeypatch.setattr(net, "_relu_in_pool", frozenset())
    apart = net.trace(x, y, need_input_grad=need_input_grad, keep_intermediates=False)
    assert fused.loss == apart.loss
    for got, want in ((fused.sample_losses, apart.sample_losses), (fused.output, apart.output),
                      (fused.layers[-1].delta, apart.layers[-1].delta), (fused.input_grad, apart.input_grad)):
        np.testing.assert_array_equal(got, want)
    for mine, theirs in zip(fused.layers, apart.layers, strict=True):
        assert mine.grads.keys() == theirs.grads.keys()
        for key in mine.grads:
            np.testing.assert_array_equal(mine.grads[key], theirs.grads[key], err_msg=f"{mine.name} d{key}")


def test_the_ties_case_has_windows_whose_z_and_relu_z_winners_differ():
    # what makes the "ties" case above worth having: without a positive z, relu(z)'s winner is the
    # window's first offset and z's its largest (a gradient of 0 either way)
    net, x, y = relu_pool_case("ties")
    full = net.trace(x, y)
    _, z_winners = kernels.maxpool_forward(full.layers[0].z, (2, 2), (2, 2))
    assert (z_winners != full.layers[1].argmax).any()
    assert (full.layers[0].z == 0).any() and (full.layers[0].z > 0).any()


@pytest.mark.parametrize("name", sorted(RELU_POOL_SPECS))
def test_a_lean_trace_with_the_relu_in_the_pool_matches_pytorch(name, monkeypatch):
    net, x, y = relu_pool_case(name, batch=6)
    spec = RELU_POOL_SPECS[name]
    monkeypatch.setattr(Network, "trace_blocks", lambda self, N: [(0, 2), (2, 4), (4, 6)])
    lean = net.trace(x, y, keep_intermediates=False)
    reference = torch_trace(spec, net.params, x, y)
    close(lean.loss, reference.loss, what="loss")
    close(lean.input_grad, reference.input_grad, rtol=1e-10, what="dL/dx")
    for i, (ours, theirs) in enumerate(zip(lean.layers, reference.layers)):
        for key, grad in ours.grads.items():
            close(grad, theirs.params[key].grad.numpy(), rtol=1e-10, what=f"layer {i} d{key}")


@pytest.mark.parametrize("batch, pooled", [(64, True), (8, False)])
def test_a_lean_trace_in_one_block_lets_the_pool_apply_the_relu_from_a_megabyte_of_output(batch, pooled,
                                                                                           monkeypatch):
    # LeNet-5 in float32: 18.8 kB of conv1 output a sample, so batch 64 (1.2 MB) is past
    # LEAN_ONE_BLOCK_MIN_BYTES and batch 8 is not (the whole-batch code: relu' over conv1's output)
    spec = make_spec((1, 28, 28), LENET5_LAYERS, dtype="float32")
    net = Network.from_spec(spec)
    rng = np.random.default_rng(18)
    x, y = random_input(spec, batch, rng, dtype=np.float32), random_targets(spec, batch, rng)
    assert len(net.trace_blocks(batch)) == 1
    shapes = []
    real = net.layers[0].delta_from_grad_a
    monkeypatch.setattr(net.layers[0], "delta_from_grad_a",
                        lambda grad_a, z, a, out=None: shapes.append(grad_a.shape[1:]) or real(grad_a, z, a, out=out))
    lean = net.trace(x, y, need_input_grad=False, keep_intermediates=False)
    assert shapes == [net.layers[1].output_shape if pooled else net.layers[0].output_shape]
    full = net.trace(x, y, need_input_grad=False)
    assert_training_step_of(lean, full, rtol=2e-5)
