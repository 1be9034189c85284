"""A trace done in blocks of the batch (network.py: big batches, and batches dealt over threads)
equals the trace done in one go, array for array, and still matches PyTorch."""

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from engine import Network, network, scratch
from engine_testkit import (
    LENET5_LAYERS,
    assert_trace_matches_torch,
    make_spec,
    random_input,
    random_targets,
)
from test_engine_conv_options import random_conv_spec
from test_engine_memory import trace_arrays

SPECS = {
    "lenet5": make_spec((1, 28, 28), LENET5_LAYERS),
    "avgpool, leaky relu, sigmoid, binary cross-entropy": make_spec((2, 7, 6), [
        {"type": "conv", "filters": 3, "kernel": 3, "padding": 1, "activation": "leaky_relu"},
        {"type": "avgpool", "size": 2, "stride": 1},
        {"type": "flatten"},
        {"type": "dense", "units": 4, "activation": "tanh"},
        {"type": "dense", "units": 2, "activation": "sigmoid"}], loss="binary_cross_entropy"),
    "overlapping max-pool, circular true convolution, mse": make_spec((1, 9, 9), [
        {"type": "conv", "filters": 2, "kernel": 3, "padding": 1, "padding_mode": "circular",
         "operation": "convolution", "activation": "sigmoid"},
        {"type": "maxpool", "size": 3, "stride": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 3, "activation": "identity"}], loss="mse"),
    "flatten first": make_spec((1, 4, 4), [
        {"type": "flatten"},
        {"type": "dense", "units": 5, "activation": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"}]),
    "a conv without activation": make_spec((2, 6, 6), [
        {"type": "conv", "filters": 2, "kernel": 3, "stride": 3, "activation": "identity"},
        {"type": "flatten"},
        {"type": "dense", "units": 2, "activation": "softmax"}]),
}
FIELDS = ("input", "z", "a", "delta", "grad_a", "argmax")


def assert_same_trace(got, want):
    assert got.loss == pytest.approx(want.loss, rel=1e-12)
    np.testing.assert_allclose(got.sample_losses, want.sample_losses, rtol=1e-12)
    if want.input_grad is None:
        assert got.input_grad is None
    else:
        np.testing.assert_allclose(got.input_grad, want.input_grad, rtol=1e-10, atol=1e-14)
    for mine, theirs in zip(got.layers, want.layers, strict=True):
        for name in FIELDS:
            a, b = getattr(mine, name), getattr(theirs, name)
            assert (a is None) == (b is None), (mine.name, name)
            if b is not None:
                assert a.shape == b.shape and a.dtype == b.dtype, (mine.name, name)
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14, err_msg=f"{mine.name}.{name}")
        assert mine.grads.keys() == theirs.grads.keys()
        for key in theirs.grads:
            np.testing.assert_allclose(mine.grads[key], theirs.grads[key], rtol=1e-10, atol=1e-13)


def every_sample_its_own_block(monkeypatch):
    monkeypatch.setattr(Network, "trace_blocks", lambda self, N: [(n, n + 1) for n in range(N)])


def in_blocks_and_whole(net, x, y, monkeypatch, need_input_grad=True):
    assert len(net.trace_blocks(len(x))) == 1
    whole = net.trace(x, y, need_input_grad=need_input_grad)
    every_sample_its_own_block(monkeypatch)
    return net.trace(x, y, need_input_grad=need_input_grad), whole


def network_with_random_biases(spec, rng, scale: float) -> Network:
    """The spec's network with biases drawn from N(0, scale), so that no ReLU or max-pool tie
    hides a block's mistake behind zeros."""
    net = Network.from_spec(spec)
    for params in net.params:
        if "b" in params:
            params["b"][...] = rng.normal(0.0, scale, size=params["b"].shape)
    return net


@pytest.mark.parametrize("need_input_grad", [True, False])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_trace_in_blocks_equals_the_trace_in_one_go(name, need_input_grad, monkeypatch):
    spec = SPECS[name]
    rng = np.random.default_rng(3)
    net = network_with_random_biases(spec, rng, 0.5)
    x, y = random_input(spec, 5, rng), random_targets(spec, 5, rng)
    blocked, whole = in_blocks_and_whole(net, x, y, monkeypatch, need_input_grad)
    assert_same_trace(blocked, whole)


@pytest.mark.parametrize("seed", range(8))
def test_random_conv_options_in_blocks_match_pytorch(seed, monkeypatch):
    every_sample_its_own_block(monkeypatch)
    spec = random_conv_spec(seed)
    rng = np.random.default_rng(200 + seed)
    net = Network.from_spec(spec)
    for params in net.params:
        if "b" in params:
            params["b"][...] = rng.normal(0.0, 0.5, size=params["b"].shape)
    assert_trace_matches_torch(spec, random_input(spec, 3, rng), random_targets(spec, 3, rng), net=net)


def test_blocks_dealt_over_two_threads_equal_the_one_thread_trace(monkeypatch):
    spec = SPECS["lenet5"]
    net = Network.from_spec(spec)
    rng = np.random.default_rng(4)
    x, y = random_input(spec, 7, rng), random_targets(spec, 7, rng)
    whole = net.trace(x, y)
    monkeypatch.setattr(network, "THREAD_BLOCK_MIN_BYTES", 0)
    monkeypatch.setattr(scratch, "POOL_BACKOFF_SECONDS", 0.0)  # a slow pool thread must not stop the dealing
    monkeypatch.setattr(scratch, "_pool_backoff_until", 0.0)
    seen = []
    original = net.layers[0].forward_block
    caller, pool_took_one = threading.get_ident(), threading.Event()

    def recording_forward_block(*args, **kwargs):
        seen.append(threading.get_ident())
        if threading.get_ident() == caller:
            pool_took_one.wait(timeout=30)  # blocks go to whichever thread is free: let the pool take one
        else:
            pool_took_one.set()
        return original(*args, **kwargs)

    monkeypatch.setattr(net.layers[0], "forward_block", recording_forward_block)
    with threadpool_limits(limits=2, user_api="blas"):
        dealt = net.trace(x, y)
    assert len(seen) == 4 and len(set(seen)) == 2  # four blocks: two per thread, dealt to either
    assert_same_trace(dealt, whole)


def test_a_trace_in_blocks_shares_no_memory_with_the_next(monkeypatch):
    every_sample_its_own_block(monkeypatch)
    net = Network.from_spec(SPECS["lenet5"])
    rng = np.random.default_rng(5)
    first = net.trace(rng.uniform(size=(4, 1, 28, 28)), rng.integers(0, 10, size=4))
    kept = [a.copy() for a in trace_arrays(first)]
    second = net.trace(rng.uniform(size=(4, 1, 28, 28)), rng.integers(0, 10, size=4))
    for mine in trace_arrays(first):
        assert not any(np.shares_memory(mine, theirs) for theirs in trace_arrays(second))
    for before, now in zip(kept, trace_arrays(first)):
        np.testing.assert_array_equal(before, now)


def test_only_big_batches_run_in_blocks(monkeypatch):
    net = Network.from_spec(make_spec((1, 28, 28), LENET5_LAYERS, dtype="float32"))
    # one thread: blocks of at most BLOCK_BYTES of conv1 output (18.8 kB a sample)
    assert net.trace_blocks(64) == [(0, 64)]
    assert net.trace_blocks(128) == [(0, 64), (64, 128)]
    assert net.trace_blocks(256) == [(0, 64), (64, 128), (128, 192), (192, 256)]
    assert net.trace_blocks(250) == [(0, 62), (62, 125), (125, 187), (187, 250)]
    monkeypatch.setattr(network, "kernel_threads", lambda: 2)
    assert net.trace_blocks(64) == [(0, 64)]  # 1.2 MB of conv1 output: as on one thread
    assert net.trace_blocks(128) == [(0, 64), (64, 128)]  # 2.4 MB: a block for each thread
    assert net.trace_blocks(256) == [(0, 64), (64, 128), (128, 192), (192, 256)]  # two each
    assert len(net.trace_blocks(1024)) == 13  # at most BLOCK_BYTES each


@pytest.mark.parametrize("need_input_grad", [True, False])
def test_a_big_batch_on_one_thread_runs_in_blocks_equal_to_the_trace_in_one_go(need_input_grad, monkeypatch):
    """The blocks trace_blocks really picks on one thread (no monkeypatched blocks): each block
    forward and straight back, the weights' gradients summed over the blocks."""
    spec = SPECS["lenet5"]  # float64
    rng = np.random.default_rng(6)
    net = network_with_random_biases(spec, rng, 0.1)
    x, y = random_input(spec, 90, rng), random_targets(spec, 90, rng)
    blocks = net.trace_blocks(90)
    assert len(blocks) == 3 and blocks[0] == (0, 30)  # 37.6 kB of conv1 output a sample
    seen = []
    original = net.layers[2].backward
    monkeypatch.setattr(net.layers[2], "backward", lambda *args, **kwargs: seen.append(len(args[0])) or
                        original(*args, **kwargs))
    blocked = net.trace(x, y, need_input_grad=need_input_grad)
    assert seen == [30, 30, 30]
    monkeypatch.setattr(network, "BLOCK_BYTES", 2**40)
    assert net.trace_blocks(90) == [(0, 90)]
    whole = net.trace(x, y, need_input_grad=need_input_grad)
    assert_same_trace(blocked, whole)


def test_a_float32_batch_in_blocks_matches_pytorch_and_the_trace_in_one_go(monkeypatch):
    spec = make_spec((1, 28, 28), LENET5_LAYERS, dtype="float32")
    net = Network.from_spec(spec)
    rng = np.random.default_rng(7)
    x, y = random_input(spec, 200, rng, dtype=np.float32), random_targets(spec, 200, rng)
    assert len(net.trace_blocks(200)) == 3
    blocked = net.trace(x, y)
    reference = Network.from_spec(make_spec((1, 28, 28), LENET5_LAYERS))  # float64, same seed
    _, in_float64 = assert_trace_matches_torch(reference.spec, x.astype(np.float64), y, net=reference)
    for mine, theirs in zip(blocked.layers, in_float64.layers, strict=True):
        for name in ("z", "a", "delta"):
            np.testing.assert_allclose(getattr(mine, name), getattr(theirs, name), rtol=2e-3, atol=2e-5,
                                       err_msg=f"{mine.name}.{name}")
        for key in theirs.grads:
            np.testing.assert_allclose(mine.grads[key], theirs.grads[key], rtol=2e-3, atol=2e-5)
        if theirs.argmax is not None:
            np.testing.assert_array_equal(mine.argmax, theirs.argmax)
    monkeypatch.setattr(network, "BLOCK_BYTES", 2**40)
    whole = net.trace(x, y)
    # float32 rounding apart: OpenBLAS may order a sum differently for a block's matrices than for
    # the whole batch's, and the weights' gradients are sums over the blocks
    def close_in_float32(got, want, what):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max(), err_msg=what)

    close_in_float32(blocked.input_grad, whole.input_grad, "input_grad")
    for mine, theirs in zip(blocked.layers, whole.layers, strict=True):
        for name in FIELDS:
            if getattr(theirs, name) is not None:
                close_in_float32(getattr(mine, name), getattr(theirs, name), f"{mine.name}.{name}")
        for key in theirs.grads:
            close_in_float32(mine.grads[key], theirs.grads[key], f"{mine.name}.d{key}")
