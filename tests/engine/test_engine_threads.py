"""BLAS threads during a pass: one for the matrix products, the rest for the kernels' batch chunks,
and the caller's setting back afterwards (tests otherwise run with one BLAS thread, conftest.py)."""

import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import engine.network as network_module
from engine import Network, kernels, scratch
from engine.architectures import lenet5
from engine.scratch import kernel_threads, on_one_blas_thread, over_threads, worker_pool


@pytest.fixture(autouse=True)
def pool_never_backs_off(monkeypatch):
    """These tests check what runs where: a pass held up by a slow pool thread (a loaded machine)
    must not make the next one keep to the calling thread."""
    monkeypatch.setattr(scratch, "POOL_BACKOFF_SECONDS", 0.0)
    monkeypatch.setattr(scratch, "_pool_backoff_until", 0.0)


def blas_threads() -> list[int]:
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


@on_one_blas_thread
def seen_inside_a_pass():
    return blas_threads(), kernel_threads()


def test_a_pass_runs_the_blas_on_one_thread_and_the_kernels_on_the_callers_count_then_restores_it():
    with threadpool_limits(limits=2, user_api="blas"):
        assert seen_inside_a_pass() == ([1] * len(blas_threads()), 2)
        assert set(blas_threads()) == {2} and kernel_threads() == 1
    with threadpool_limits(limits=1, user_api="blas"):
        assert seen_inside_a_pass() == ([1] * len(blas_threads()), 1)


def test_the_callers_blas_threads_come_back_when_the_pass_fails():
    net = Network.from_spec(lenet5())
    with threadpool_limits(limits=2, user_api="blas"):
        with pytest.raises(ValueError):
            net.trace(np.zeros((1, 1, 5, 5)), [0])
        assert set(blas_threads()) == {2}


def test_a_trace_on_two_threads_equals_the_one_thread_trace():
    net = Network.from_spec(lenet5(dtype="float64"))
    rng = np.random.default_rng(1)
    x, y = rng.uniform(size=(64, 1, 28, 28)), rng.integers(0, 10, size=64)
    # big enough to be dealt over two threads in blocks (a smaller batch runs as on one thread)
    assert 64 * 6 * 28 * 28 * 8 >= 2 * network_module.THREAD_BLOCK_MIN_BYTES
    one = net.trace(x, y)
    with threadpool_limits(limits=2, user_api="blas"):
        two = net.trace(x, y)
    assert two.loss == pytest.approx(one.loss, rel=1e-12)
    np.testing.assert_allclose(two.input_grad, one.input_grad, rtol=1e-10, atol=1e-14)
    for a, b in zip(one.layers, two.layers):
        np.testing.assert_allclose(b.z, a.z, rtol=1e-10, atol=1e-13)
        for key in a.grads:
            np.testing.assert_allclose(b.grads[key], a.grads[key], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("threads", [2, 3])
def test_wide_conv_chunks_split_over_threads_equal_the_naive_form(threads, monkeypatch):
    monkeypatch.setattr(kernels, "kernel_threads", lambda: threads)
    monkeypatch.setattr(kernels, "WIDE_CHUNK_BYTES", 2000)
    monkeypatch.setattr(kernels, "WIDE_ROWS_MAX_WASTE", 1e9)
    rng = np.random.default_rng(threads)
    x, w, b = rng.normal(size=(11, 2, 9, 8)), rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3)
    z = kernels.conv_forward(x, w, b, (1, 1), (1, 2))
    np.testing.assert_allclose(z, kernels.conv_forward_naive(x, w, b, (1, 1), (1, 2)), rtol=1e-10, atol=1e-12)
    delta = rng.normal(size=z.shape)
    seen = set()
    original = kernels._wide_windows
    caller, pool_took_one = threading.get_ident(), threading.Event()

    def recording_windows(*args, **kwargs):
        seen.add(threading.get_ident())
        if threading.get_ident() == caller:
            # the chunks go to whichever thread is free first: hold the calling thread until a pool
            # thread has taken one, so that both really run
            pool_took_one.wait(timeout=30)
        else:
            pool_took_one.set()
        return original(*args, **kwargs)

    monkeypatch.setattr(kernels, "_wide_windows", recording_windows)
    for got, want in zip(kernels.conv_backward(delta, x, w, (1, 1), (1, 2)),
                         kernels.conv_backward_naive(delta, x, w, (1, 1), (1, 2))):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-11)
    assert len(seen) >= 2  # the calling thread and at least one pool thread (the pool has cores - 1)


def test_work_the_pool_cannot_start_is_done_by_the_calling_thread_in_item_order():
    """A pool thread that gets no core (here: busy with something else) holds nothing up."""
    release = threading.Event()
    busy = [worker_pool().submit(release.wait, 30) for _ in range(worker_pool()._max_workers)]
    try:
        ran_on = []

        def job(group):
            ran_on.append(threading.get_ident())
            return [item * 10 for item in group]

        assert over_threads(job, [1, 2, 3, 4], threads=2) == [[10], [20], [30], [40]]
        assert set(ran_on) == {threading.get_ident()}
    finally:
        release.set()
        for future in busy:
            future.result()
    assert over_threads(job, [1, 2, 3], threads=1) == [[10, 20, 30]]  # one thread: one job over all


def test_after_the_pool_held_a_pass_up_passes_keep_to_the_calling_thread_for_a_while(monkeypatch):
    monkeypatch.setattr(scratch, "POOL_BACKOFF_SECONDS", 60.0)
    caller, pool_took_one = threading.get_ident(), threading.Event()

    def job(group):  # the pool's item is slow, as on a machine whose other core is busy
        if threading.get_ident() == caller:
            pool_took_one.wait(timeout=30)
        else:
            pool_took_one.set()
            time.sleep(0.2)
        return threading.get_ident()

    first = over_threads(job, list(range(20)), threads=2)
    assert len(first) == 20 and len(set(first)) == 2
    assert over_threads(job, list(range(20)), threads=2) == [caller]  # one job over all, here
    with threadpool_limits(limits=2, user_api="blas"):
        assert seen_inside_a_pass()[1] == 1  # a pass runs as on one thread: no blocks, no split chunks
    monkeypatch.setattr(scratch, "_pool_backoff_until", 0.0)
    assert len(over_threads(job, list(range(20)), threads=2)) == 20  # dealt again


def test_a_pool_thread_that_got_little_of_a_core_backs_the_pool_off(monkeypatch):
    """Sleeping stands for a thread waiting for a core that other processes hold: its items took
    wall time but little CPU time, even though the calling thread never waited for it."""
    monkeypatch.setattr(scratch, "POOL_BACKOFF_SECONDS", 60.0)
    caller, pool_took_one = threading.get_ident(), threading.Event()

    def job(group):
        if threading.get_ident() == caller:
            pool_took_one.wait(timeout=30)
            spin_until = time.thread_time() + 0.005
            while time.thread_time() < spin_until:  # the calling thread works on a core of its own
                pass
        else:
            pool_took_one.set()
            time.sleep(0.01)
        return threading.get_ident()

    assert len(set(over_threads(job, list(range(12)), threads=2))) == 2
    assert over_threads(job, list(range(12)), threads=2) == [caller]


def test_a_batch_too_small_for_blocks_runs_on_the_calling_thread_only(monkeypatch):
    net = Network.from_spec(lenet5(dtype="float32"))
    rng = np.random.default_rng(2)
    x, y = rng.uniform(size=(16, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, size=16)
    seen = set()
    original = kernels._wide_windows

    def recording_windows(*args, **kwargs):
        seen.add(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(kernels, "_wide_windows", recording_windows)
    monkeypatch.setattr(kernels, "WIDE_CHUNK_BYTES", 2000)  # many chunks: there would be some to deal out
    with threadpool_limits(limits=2, user_api="blas"):
        two = net.trace(x, y)
    assert seen == {threading.get_ident()}
    one = net.trace(x, y)
    np.testing.assert_array_equal(two.layers[0].grads["W"], one.layers[0].grads["W"])
