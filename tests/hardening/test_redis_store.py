"""The Redis session store (``CNNVIZ_SESSION_STORE=redis``) keeps the SQLite store's guarantees for
server processes on several hosts. Each test runs a real ``redis-server`` on a free port with its
files in a temporary folder; the "hosts" are separate server processes (``bench/serving.py``) with
separate data folders, so Redis is the only thing they share."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.persistence import SessionConflict
from app.redis_store import RedisSessionStore
from app.sessions import Session
from app.settings import Settings
from app.store import SessionNotFound, StoreFull

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from serving import RedisServer  # noqa: E402

STEP = {"batch_size": 4, "learning_rate": 0.05, "optimizer": "momentum"}
TRACE = {"input": {"dataset": "mnist", "index": 11}}


@pytest.fixture
def redis_server(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def hosts(real_server, redis_server, tmp_path):
    """``hosts(n, **settings)``: n server processes sharing the Redis server, each with its own
    data folder."""
    def start(count: int = 2, **settings):
        return [real_server(tmp_path / f"host{i}", session_store="redis",
                            redis_url=redis_server.url, **settings) for i in range(count)]
    return start


def store_on(redis_server, **caps) -> RedisSessionStore:
    options = {"key_prefix": "cnnviz", "max_sessions": 64, "max_bytes": 1 << 30,
               "idle_seconds": 3600.0, "evict_idle_seconds": 600.0, "max_file_bytes": 1 << 26,
               **caps}
    return RedisSessionStore.from_url(redis_server.url, **options)


def test_a_save_from_an_outdated_copy_is_refused_and_loses_nothing(redis_server):
    first, second = store_on(redis_server), store_on(redis_server)
    session = Session.create({"input_shape": [1, 6, 6], "layers": [
        {"type": "flatten"}, {"type": "dense", "units": 1, "activation": "sigmoid"}],
        "loss": "binary_cross_entropy"})
    first.add(session)
    here, there = first.get(session.id), second.get(session.id)
    assert here is not there and here.step == there.step == 0

    here.step = 1
    first.save(here)
    there.step = 7  # computed from step 0 on the other host: must not overwrite step 1
    with pytest.raises(SessionConflict):
        second.save(there)
    assert second.get(session.id).step == 1  # the outdated copy was dropped, the saved one read
    reloaded = second.get(session.id)
    reloaded.step = 2
    second.save(reloaded)
    assert first.get(session.id).step == 2  # and the first host sees the newer save too

    first.delete(session.id)
    with pytest.raises(SessionNotFound):
        second.get(session.id)
    reloaded.step = 3
    second.save(reloaded)  # saving a deleted session does not bring it back
    with pytest.raises(SessionNotFound):
        first.get(session.id)


def test_stores_with_different_key_prefixes_do_not_see_each_other(redis_server):
    ours, theirs = store_on(redis_server), store_on(redis_server, key_prefix="other-course")
    session = Session.create({"input_shape": [1, 6, 6], "layers": [{"type": "flatten"}],
                              "loss": "mse"})
    ours.add(session)
    assert theirs.ids() == [] and ours.ids() == [session.id]
    with pytest.raises(SessionNotFound):
        theirs.get(session.id)


def test_a_full_store_evicts_the_least_recently_used_idle_session_on_any_host(redis_server):
    first = store_on(redis_server, max_sessions=2, evict_idle_seconds=0.3)
    second = store_on(redis_server, max_sessions=2, evict_idle_seconds=0.3)
    spec = {"input_shape": [1, 6, 6], "layers": [{"type": "flatten"}], "loss": "mse"}
    older, newer = Session.create(spec), Session.create(spec)
    first.add(older)
    time.sleep(0.05)
    first.add(newer)
    with pytest.raises(StoreFull) as refused:  # both used just now: nobody is evicted
        second.add(Session.create(spec))
    assert refused.value.cap == "max_sessions" and "maximum of 2 sessions" in str(refused.value)
    time.sleep(0.4)
    second.get(newer.id)  # used again: only `older` is idle past the eviction time
    third = Session.create(spec)
    second.add(third)
    assert sorted(first.ids()) == sorted([newer.id, third.id])
    with pytest.raises(SessionNotFound):
        first.get(older.id)


@pytest.mark.slow
def test_twenty_concurrent_steps_across_two_hosts_lose_none(hosts):
    first, second = hosts(2)
    with httpx.Client(base_url=first.url, timeout=120) as client:
        session_id = client.post("/api/sessions", json={"preset": "tiny", "seed": 3}).json()["id"]

    def step(n: int) -> httpx.Response:
        with httpx.Client(base_url=(first, second)[n % 2].url, timeout=120) as client:
            return client.post(f"/api/sessions/{session_id}/step", json=STEP)

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(step, range(20)))

    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {200, 409}, [a.text for a in answers if a.status_code not in (200, 409)]
    done = [answer.json() for answer in answers if answer.status_code == 200]
    assert done, "no step succeeded"
    for answer in answers:
        if answer.status_code == 409:
            assert "changed by another server process" in answer.json()["detail"]
    # every step that answered 200 is in the session, each exactly once, one after the other
    assert sorted(a["step"] for a in done) == list(range(1, len(done) + 1))
    for server in (first, second):
        with httpx.Client(base_url=server.url, timeout=120) as client:
            assert client.get(f"/api/sessions/{session_id}").json()["step"] == len(done)
            history = client.get(f"/api/sessions/{session_id}/history").json()
            assert history["steps"] == list(range(1, len(done) + 1))
    by_step = sorted(done, key=lambda a: a["step"])
    for earlier, later in zip(by_step, by_step[1:]):
        assert earlier["params_after"] == later["params_before"]


@pytest.mark.slow
def test_sessions_survive_restarting_every_server_process_and_redis(hosts, redis_server):
    first, second = hosts(2)
    with httpx.Client(base_url=first.url, timeout=120) as client:
        session_id = client.post("/api/sessions", json={"preset": "lenet5", "seed": 2}).json()["id"]
    for n, server in enumerate((first, second, first)):
        with httpx.Client(base_url=server.url, timeout=120) as client:
            assert client.post(f"/api/sessions/{session_id}/step",
                               json={**STEP, "batch_size": 8}).json()["step"] == n + 1
    with httpx.Client(base_url=second.url, timeout=120) as client:
        loss_before = client.post(f"/api/sessions/{session_id}/trace", json=TRACE).json()["loss"]
    assert first.stop() == 0 and second.stop() == 0
    redis_server.restart()  # its append-only file brings the sessions back

    for server in hosts(2):
        with httpx.Client(base_url=server.url, timeout=120) as client:
            assert client.get(f"/api/sessions/{session_id}").json()["step"] == 3
            trace = client.post(f"/api/sessions/{session_id}/trace", json=TRACE).json()
            assert trace["loss"] == loss_before


@pytest.mark.slow
def test_the_session_cap_holds_across_hosts(hosts):
    first, second = hosts(2, max_sessions=3)
    with httpx.Client(base_url=first.url, timeout=60) as a, \
            httpx.Client(base_url=second.url, timeout=60) as b:
        made = [a.post("/api/sessions", json={"preset": "tiny"}) for _ in range(2)]
        made.append(b.post("/api/sessions", json={"preset": "tiny"}))
        assert [r.status_code for r in made] == [201, 201, 201]
        for client in (a, b):
            full = client.post("/api/sessions", json={"preset": "tiny"})
            assert full.status_code == 429
            assert full.json()["cap"] == "max_sessions" and full.json()["limit"] == 3
        assert b.delete(f"/api/sessions/{made[0].json()['id']}").status_code == 204
        assert a.post("/api/sessions", json={"preset": "tiny"}).status_code == 201
        assert b.post("/api/sessions", json={"preset": "tiny"}).status_code == 429


@pytest.mark.slow
def test_idle_sessions_expire_on_every_host_and_used_ones_stay(hosts):
    idle = 2.0
    first, second = hosts(2, session_idle_seconds=idle, max_sessions=2)
    with httpx.Client(base_url=first.url, timeout=60) as a, \
            httpx.Client(base_url=second.url, timeout=60) as b:
        forgotten = a.post("/api/sessions", json={"preset": "tiny"}).json()["id"]
        kept = b.post("/api/sessions", json={"preset": "tiny"}).json()["id"]
        assert a.post("/api/sessions", json={"preset": "tiny"}).status_code == 429
        # `kept` is used through the other host the whole time; `forgotten` is left alone
        deadline = time.monotonic() + 2 * idle
        while time.monotonic() < deadline:
            assert a.get(f"/api/sessions/{kept}").status_code == 200
            time.sleep(idle / 4)
        for client in (a, b):
            assert client.get(f"/api/sessions/{forgotten}").status_code == 404
            assert client.get(f"/api/sessions/{kept}").status_code == 200
        # the expired session no longer counts against the cap
        assert b.post("/api/sessions", json={"preset": "tiny"}).status_code == 201


def test_an_unreachable_redis_is_a_503_in_plain_words_and_recovers(redis_server, tmp_path):
    settings = Settings(session_store="redis", redis_url=redis_server.url)
    with TestClient(create_app(settings)) as client:
        session_id = client.post("/api/sessions", json={"preset": "tiny"}).json()["id"]
        redis_server.stop()
        answer = client.post(f"/api/sessions/{session_id}/step", json=STEP)
        assert answer.status_code == 503
        assert answer.json()["detail"].startswith("the session store is not reachable")
        assert "redis" not in answer.json()["detail"].lower()
        assert client.post("/api/sessions", json={"preset": "tiny"}).status_code == 503
        redis_server.start()  # same port, same append-only file
        assert client.get(f"/api/sessions/{session_id}").json()["step"] == 0
        assert client.post(f"/api/sessions/{session_id}/step", json=STEP).json()["step"] == 1


def test_a_server_without_redis_says_so_at_start(redis_server):
    redis_server.stop()
    with pytest.raises(RuntimeError, match="cannot reach the Redis session store at 127.0.0.1"):
        create_app(Settings(session_store="redis", redis_url=redis_server.url))


def test_the_memory_cap_unloads_idle_copies_here_and_loses_nothing(redis_server):
    clock = [1000.0]
    spec = {"input_shape": [1, 6, 6], "layers": [{"type": "flatten"},
            {"type": "dense", "units": 4}], "loss": "mse"}
    one = Session.create(spec).memory_bytes()
    store = store_on(redis_server, max_bytes=2 * one, clock=lambda: clock[0])
    sessions = []
    for _ in range(3):
        session = Session.create(spec)
        store.add(session)
        sessions.append(session.id)
        clock[0] += 10  # older than the grace period: may be unloaded
    assert len(store.loaded_ids()) == 2 and sessions[0] not in store.loaded_ids()
    for session_id in sessions:  # all still there, loaded again in turn
        assert store.get(session_id).id == session_id
        clock[0] += 10
    busy = store.get(sessions[1])
    with busy.lock, pytest.raises(StoreFull) as refused:
        store_on(redis_server, max_bytes=one // 2).add(Session.create(spec))
    assert refused.value.cap == "max_store_bytes"


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_bench_load_with_two_server_processes_on_a_store_gets_no_errors(bench_load, store):
    report = bench_load.run_load(students=4, duration=6, max_requests=1000, think=0.2,
                                 store=store)
    summary = bench_load.format_report(report)
    assert report.errors == [], summary
    counts = {kind: len(values) for kind, values in report.latencies.items()}
    assert counts["create"] == 4 and counts["step"] > 0 and counts["trace"] > 0, counts
    assert f"store {store}: 2 server processes" in summary
    comparison = bench_load.format_store_comparison({store: report})
    assert comparison.splitlines()[1].startswith(store)
