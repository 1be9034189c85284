"""trace(..., keep_intermediates=False): a training step's trace. Its loss, each sample's loss,
output layer and weight gradients equal the full trace's (exactly in one block; to rounding when
the dense layers' gradients are summed over blocks), for every kind of network, in one block, in
blocks of one sample, and dealt over two threads; it keeps nothing else, and nothing it returns
is overwritten by the next trace (the blocks' buffers are reused)."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from engine import Network, network, scratch
from engine_testkit import LENET5_LAYERS, make_spec, random_input, random_targets, torch_trace, close
from test_engine_blocks import SPECS, every_sample_its_own_block, network_with_random_biases

SPECS = {**SPECS, "ends in a reshape": make_spec((1, 4, 4), [
    {"type": "conv", "filters": 2, "kernel": 3, "padding": 1, "activation": "tanh"},
    {"type": "flatten"}], loss="mse")}


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
