"""A full store makes room by evicting the least recently used session idle for a while, and
only refuses when every session was used recently; server processes sharing one database never
pass the session cap together."""

import multiprocessing
import time

import pytest

from app.persistence import SQLiteSessionStore
from app.sessions import Session
from app.store import InMemorySessionStore, SessionNotFound, StoreFull

TINY = {"input_shape": [1, 6, 6], "loss": "binary_cross_entropy", "layers": [
    {"type": "flatten"}, {"type": "dense", "units": 1, "activation": "sigmoid"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def memory_store(clock, **caps):
    return InMemorySessionStore(**{"max_sessions": 3, "max_bytes": 10**8, "idle_seconds": 3600,
                                   "evict_idle_seconds": 600, **caps}, clock=clock)


def sqlite_store(path, clock, **caps):
    return SQLiteSessionStore(path, **{"max_sessions": 3, "max_bytes": 10**8,
                                       "idle_seconds": 3600, "max_file_bytes": 10**7,
                                       "evict_idle_seconds": 600, **caps}, clock=clock)


@pytest.fixture(params=["memory", "sqlite"])
def store_and_clock(request, tmp_path):
    clock = Clock()
    store = memory_store(clock) if request.param == "memory" else sqlite_store(tmp_path, clock)
    yield store, clock
    store.close()


def test_a_full_store_evicts_the_least_recently_used_idle_session(store_and_clock):
    store, clock = store_and_clock
    sessions = [Session.create(TINY) for _ in range(3)]
    for session in sessions:
        store.add(session)
        clock.now += 100
    clock.now += 600
    store.get(sessions[0].id)  # used just now: not a candidate
    newcomer = Session.create(TINY)
    store.add(newcomer)
    with pytest.raises(SessionNotFound):
        store.get(sessions[1].id)  # the least recently used idle one
    for kept in (sessions[0], sessions[2], newcomer):
        assert store.get(kept.id).id == kept.id
    assert len(store) == 3


def test_a_store_full_of_recently_used_sessions_refuses_in_plain_words(store_and_clock):
    store, clock = store_and_clock
    sessions = [Session.create(TINY) for _ in range(3)]
    for session in sessions:
        store.add(session)
    clock.now += 599
    with pytest.raises(StoreFull) as caught:
        store.add(Session.create(TINY))
    assert caught.value.cap == "max_sessions"
    assert "10 minutes" in str(caught.value) and "CNNVIZ" not in str(caught.value)


def test_a_session_in_use_is_never_evicted(store_and_clock):
    store, clock = store_and_clock
    sessions = [Session.create(TINY) for _ in range(3)]
    for session in sessions:
        store.add(session)
    clock.now += 700  # idle long enough to be evicted, but each in the middle of a request
    with sessions[0].lock, sessions[1].lock, sessions[2].lock:
        with pytest.raises(StoreFull):
            store.add(Session.create(TINY))


def _add_sessions(path: str, count: int, results) -> None:
    store = SQLiteSessionStore(path, max_sessions=10, max_bytes=10**8, idle_seconds=3600,
                               max_file_bytes=10**7, evict_idle_seconds=600)
    added = 0
    for _ in range(count):
        try:
            store.add(Session.create(TINY))
            added += 1
        except StoreFull:
            pass
    store.close()
    results.put(added)


@pytest.mark.slow
def test_processes_sharing_the_database_never_pass_the_cap_together(tmp_path):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_add_sessions, args=(str(tmp_path), 10, results))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    added = sum(results.get(timeout=10) for _ in workers)
    store = sqlite_store(tmp_path, time.time, max_sessions=10)
    assert added == 10 and len(store) == 10
    store.close()
