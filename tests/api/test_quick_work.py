"""Quick work on the event loop (app.limits: ``computation(..., quick=True)``, ``WouldWait``):
a small trace runs where its request arrives; anything that would make it wait or run long goes
to a worker thread instead, and the server keeps answering meanwhile."""

from __future__ import annotations

import threading
import time

import pytest

from app import training
from app.limits import QUICK_WORK_MACS, SpecCost
from tests.api.conftest import create

TRACE = {"input": {"dataset": "mnist", "index": 3}}
# Forward multiply-adds of one sample well over QUICK_WORK_MACS / 3 (a trace counts three).
WIDE_CONV = {"input_shape": [1, 28, 28],
             "layers": [{"type": "conv", "filters": 64, "kernel": 5, "padding": 2},
                        {"type": "flatten"},
                        {"type": "dense", "units": 10, "activation": "softmax"}],
             "loss": "cross_entropy"}


@pytest.fixture
def trace_threads(monkeypatch):
    """The threads the traces' engine work ran on."""
    seen: list[threading.Thread] = []
    real = training.trace_sample

    def recording(*args, **kwargs):
        seen.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "trace_sample", recording)
    return seen


def _event_loop_thread(client) -> threading.Thread:
    """The thread the test client's event loop runs on (where an async route runs)."""
    found = []

    async def probe():
        found.append(threading.current_thread())

    client.portal.call(probe)
    return found[0]


def test_a_small_trace_runs_on_the_event_loop_and_a_big_one_on_a_worker_thread(
        client, trace_threads):
    assert SpecCost.of(WIDE_CONV).forward_macs * 3 > QUICK_WORK_MACS
    loop_thread = _event_loop_thread(client)
    small = create(client)
    big = create(client, spec=WIDE_CONV, seed=0)
    for session_id in (small, big):
        response = client.post(f"/api/sessions/{session_id}/trace", json=TRACE)
        assert response.status_code == 200, response.text
    assert trace_threads[0] is loop_thread
    assert trace_threads[1] is not loop_thread


def test_a_trace_of_a_session_held_elsewhere_waits_on_a_worker_thread_not_the_event_loop(
        app, client, trace_threads):
    session_id = create(client)
    session = app.state.store.get(session_id)
    answers = {}

    def ask(name, method, path, **kwargs):
        answers[name] = getattr(client, method)(path, **kwargs)

    with session.lock:  # as a request on another thread (an export, say) would hold it
        tracing = threading.Thread(target=ask, args=("trace", "post",
                                                     f"/api/sessions/{session_id}/trace"),
                                   kwargs={"json": TRACE})
        tracing.start()
        time.sleep(0.3)
        assert "trace" not in answers  # waiting for the session...
        # ...while the server answers others (asked from a thread: were the event loop stuck
        # on the lock, the question would wait for it, and the test must still end)
        asking = threading.Thread(target=ask, args=("health", "get", "/api/health"))
        asking.start()
        asking.join(timeout=5)
        assert "health" in answers and answers["health"].status_code == 200
    tracing.join(timeout=30)
    assert answers["trace"].status_code == 200, answers["trace"].text
    assert trace_threads and trace_threads[-1] is not _event_loop_thread(client)


def test_a_stores_default_is_never_to_serve_on_the_event_loop():
    """A store that does not say it answers without waiting (the Redis store: every get asks
    the server over the network) keeps all work on worker threads."""
    from app.redis_store import RedisSessionStore
    from app.store import SessionStore

    assert RedisSessionStore.serves_without_waiting is SessionStore.serves_without_waiting
