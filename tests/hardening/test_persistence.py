"""app.persistence.SQLiteSessionStore: sessions survive a new store on the same folder, writes
are atomic, caps and expiry bound memory and disk."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from app.persistence import DATABASE_NAME, SessionConflict, SQLiteSessionStore
from app.session_codec import decode_session
from app.sessions import Session
from app.store import SessionNotFound, StoreFull
from engine import make_optimizer

TINY = {
    "input_shape": [1, 6, 6],
    "layers": [
        {"type": "conv", "filters": 2, "kernel": 3, "activation": "relu"},
        {"type": "maxpool", "size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 1, "activation": "sigmoid"},
    ],
    "loss": "binary_cross_entropy",
    "seed": 3,
}
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make_store(path, clock=None, **caps):
    settings = {"max_sessions": 8, "max_bytes": 10**8, "idle_seconds": 3600.0,
                "max_file_bytes": 10**7, **caps}
    return SQLiteSessionStore(path, clock=clock or time.time, **settings)


def trained_session(steps=3, optimizer="adam"):
    session = Session.create(TINY)
    session.optimizer = make_optimizer(optimizer, 0.1)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x = rng.random((4, 1, 6, 6), dtype=np.float32)
        y = rng.integers(0, 2, size=(4, 1)).astype(np.float32)
        trace = session.network.trace(x, y)
        session.optimizer.step(session.network.params, trace)
        session.step += 1
        session.cursor += 4
        session.history.append(session.step, float(trace.loss), 0.5, max_history=100)
    return session


def assert_same_session(a, b):
    assert a.id == b.id and a.step == b.step and a.cursor == b.cursor and a.spec == b.spec
    for key, value in a.network.state_dict().items():
        other = b.network.state_dict()[key]
        assert value.dtype == other.dtype and value.tobytes() == other.tobytes(), key
    assert a.history.steps == b.history.steps and a.history.loss == b.history.loss
    state_a, state_b = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert np.asarray(state_a[key]).tobytes() == np.asarray(state_b[key]).tobytes(), key


def test_session_survives_a_new_store_on_the_same_folder_bit_for_bit(tmp_path):
    first = make_store(tmp_path)
    session = trained_session()
    first.add(session)
    first.close()

    second = make_store(tmp_path)
    assert second.loaded_ids() == []  # nothing read until a request names the id
    assert second.ids() == [session.id]
    assert_same_session(second.get(session.id), session)
    assert second.loaded_ids() == [session.id]
    second.close()


def test_save_writes_the_mutation_and_a_reopened_store_sees_it(tmp_path):
    store = make_store(tmp_path)
    session = trained_session(steps=1)
    store.add(session)
    with session.lock:
        session.network.params[0]["W"][...] = 0.25
        session.step = 41
        store.save(session)
    store.close()
    reopened = make_store(tmp_path).get(session.id)
    assert reopened.step == 41
    assert np.all(reopened.network.params[0]["W"] == 0.25)


def test_saving_a_deleted_session_does_not_revive_it(tmp_path):
    store = make_store(tmp_path)
    session = trained_session(steps=1)
    store.add(session)
    store.delete(session.id)
    store.save(session)
    with pytest.raises(SessionNotFound):
        store.get(session.id)
    store.close()
    with pytest.raises(SessionNotFound):
        make_store(tmp_path).get(session.id)


def test_unknown_and_hostile_ids_are_simply_not_found(tmp_path):
    store = make_store(tmp_path)
    for session_id in ["nope", "../../etc/passwd", "x' OR '1'='1", "%", "\x00"]:
        with pytest.raises(SessionNotFound):
            store.get(session_id)
        with pytest.raises(SessionNotFound):
            store.delete(session_id)
    assert sorted(os.listdir(tmp_path)) == sorted(
        name for name in os.listdir(tmp_path) if name.startswith(DATABASE_NAME)
    )


def test_session_count_cap_counts_sessions_on_disk(tmp_path):
    store = make_store(tmp_path, max_sessions=2)
    store.add(trained_session(steps=0))
    store.add(trained_session(steps=0))
    store.close()
    reopened = make_store(tmp_path, max_sessions=2)
    with pytest.raises(StoreFull) as caught:
        reopened.add(trained_session(steps=0))
    assert caught.value.cap == "max_sessions"


def test_memory_cap_unloads_idle_sessions_instead_of_refusing(tmp_path):
    clock = Clock()
    one = trained_session(steps=1)
    store = make_store(tmp_path, clock, max_bytes=int(one.memory_bytes() * 2.5))
    sessions = [trained_session(steps=1) for _ in range(4)]
    for session in sessions:
        store.add(session)
        clock.now += 60
    assert store.loaded_bytes() <= store.max_bytes
    assert len(store.loaded_ids()) == 2
    # the unloaded ones come back from disk, intact
    assert_same_session(store.get(sessions[0].id), sessions[0])


def test_memory_cap_refuses_when_every_loaded_session_is_in_use(tmp_path):
    one = trained_session(steps=1)
    store = make_store(tmp_path, max_bytes=int(one.memory_bytes() * 1.5))
    store.add(one)
    with one.lock:
        with pytest.raises(StoreFull) as caught:
            store.add(trained_session(steps=1))
    assert caught.value.cap == "max_store_bytes"
    assert "in use" in str(caught.value) and "CNNVIZ" not in str(caught.value)


def test_idle_sessions_are_deleted_from_disk(tmp_path):
    clock = Clock()
    store = make_store(tmp_path, clock, idle_seconds=100)
    old, recent = trained_session(steps=0), trained_session(steps=0)
    store.add(old)
    clock.now += 60
    store.add(recent)
    clock.now += 60
    assert store.expire_idle() == [old.id]
    assert store.ids() == [recent.id]
    store.close()
    rows = sqlite3.connect(tmp_path / DATABASE_NAME).execute("SELECT id FROM sessions").fetchall()
    assert rows == [(recent.id,)]


def test_reads_keep_a_session_alive_across_a_restart(tmp_path):
    clock = Clock()
    store = make_store(tmp_path, clock, idle_seconds=100)
    session = trained_session(steps=0)
    store.add(session)
    clock.now += 90
    store.get(session.id)  # a trace: read only, no save
    store.close()
    clock.now += 90  # 180 s after the last save, 90 s after the last read
    assert make_store(tmp_path, clock, idle_seconds=100).get(session.id).id == session.id


def test_damaged_row_is_not_found_rather_than_an_error(tmp_path):
    store = make_store(tmp_path)
    session = trained_session(steps=0)
    store.add(session)
    store.close()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("UPDATE sessions SET data = ? WHERE id = ?", (b"garbage", session.id))
    with pytest.raises(SessionNotFound):
        make_store(tmp_path).get(session.id)


WRITER = textwrap.dedent("""
    import os, sys, sqlite3
    db = sqlite3.connect(sys.argv[1])
    db.execute("BEGIN")
    db.execute("UPDATE sessions SET data = ?, step = 999 WHERE id = ?",
               (os.urandom(50_000), sys.argv[2]))
    print("written", flush=True)
    os._exit(1)  # the process dies inside the transaction, before COMMIT
""")


def test_process_dying_inside_a_write_leaves_the_previous_state_readable(tmp_path):
    store = make_store(tmp_path)
    session = trained_session()
    store.add(session)
    store.close()
    done = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path / DATABASE_NAME), session.id],
                          capture_output=True, text=True, timeout=60)
    assert "written" in done.stdout
    assert_same_session(make_store(tmp_path).get(session.id), session)


HAMMER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from tests.hardening.test_persistence import make_store, trained_session
    from pathlib import Path
    store = make_store(Path(sys.argv[1]))
    session = store.get(sys.argv[3])
    print("ready", flush=True)
    while True:
        with session.lock:
            session.step += 1
            for layer in session.network.params:
                for value in layer.values():
                    value[...] = session.step
            store.save(session)
""")


def test_sigkill_during_a_stream_of_saves_never_leaves_a_torn_session(tmp_path):
    store = make_store(tmp_path)
    session = trained_session(steps=0)
    store.add(session)
    store.close()
    for delay in (0.3, 0.45, 0.6):
        writer = subprocess.Popen(
            [sys.executable, "-c", HAMMER, str(tmp_path), str(PROJECT_ROOT), session.id],
            stdout=subprocess.PIPE, text=True,
        )
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
        writer.stdout.close()
        survivor = make_store(tmp_path).get(session.id)
        assert survivor.step > 0
        # every weight was written in the same save as the step counter
        for layer in survivor.network.params:
            for value in layer.values():
                assert np.all(value == survivor.step)


def test_stored_bytes_are_the_session_codec_format(tmp_path):
    store = make_store(tmp_path)
    session = trained_session()
    store.add(session)
    (data,) = sqlite3.connect(tmp_path / DATABASE_NAME).execute(
        "SELECT data FROM sessions WHERE id = ?", (session.id,)).fetchone()
    assert_same_session(decode_session(data, max_bytes=10**7), session)


def test_database_uses_write_ahead_logging(tmp_path):
    make_store(tmp_path).close()
    (mode,) = sqlite3.connect(tmp_path / DATABASE_NAME).execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"


def test_closed_store_reopens_when_used_again(tmp_path):
    store = make_store(tmp_path)
    session = trained_session(steps=1)
    store.add(session)
    store.close()
    store.close()
    assert store.loaded_ids() == []
    assert_same_session(store.get(session.id), session)


def test_a_save_by_another_process_is_seen_by_the_next_request(tmp_path):
    first, second = make_store(tmp_path), make_store(tmp_path)  # two server processes
    session = trained_session(steps=1)
    first.add(session)
    assert second.get(session.id).step == 1
    with session.lock:
        session.step = 5
        session.network.params[0]["W"][...] = 0.5
        first.save(session)
    seen = second.get(session.id)
    assert seen.step == 5 and np.all(seen.network.params[0]["W"] == 0.5)


def test_an_update_to_an_outdated_copy_is_refused_with_409_and_not_written(tmp_path):
    first, second = make_store(tmp_path), make_store(tmp_path)
    session = trained_session(steps=0)
    first.add(session)
    stale = second.get(session.id)
    with session.lock:
        session.step = 1
        first.save(session)
    with stale.lock:
        stale.step = 7
        with pytest.raises(SessionConflict) as caught:
            second.save(stale)
    assert caught.value.status_code == 409
    assert make_store(tmp_path).get(session.id).step == 1
    assert second.get(session.id).step == 1  # the outdated copy was dropped


def _in_thread(action):
    """Run ``action`` on a thread; returns (thread, outcome dict filled when it ends)."""
    import threading

    outcome = {}

    def run():
        try:
            outcome["value"] = action()
        except Exception as error:  # noqa: BLE001 -- handed to the test to assert on
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_reads_do_not_wait_behind_a_save_that_is_committing(tmp_path):
    # Another connection holds SQLite's write lock, so the save below stays inside its commit
    # (as it would during a slow fsync) until the lock is let go. Meanwhile gets, of the saved
    # session and of another one, must answer: only the store-wide mutex could hold them up.
    store = make_store(tmp_path)
    saved, other = trained_session(steps=1), trained_session(steps=2)
    store.add(saved)
    store.add(other)
    blocker = sqlite3.connect(tmp_path / DATABASE_NAME)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        def save():
            with saved.lock:
                saved.step = 9
                store.save(saved)

        saver, saving = _in_thread(save)
        deadline = time.monotonic() + 10
        while not store._write_lock.locked() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store._write_lock.locked() and saver.is_alive()
        reader, read = _in_thread(lambda: (store.get(other.id), store.get(saved.id),
                                           store.loaded_ids()))
        reader.join(3)
        assert not reader.is_alive(), "get() waited for another session's commit"
        assert read["value"][0] is other and read["value"][1] is saved
        assert saver.is_alive()  # the save is still committing
    finally:
        blocker.rollback()
        blocker.close()
    saver.join(10)
    assert not saver.is_alive() and "error" not in saving
    assert make_store(tmp_path).get(saved.id).step == 9  # the acknowledged save is on disk


def test_a_session_deleted_while_its_save_commits_stays_deleted(tmp_path):
    store = make_store(tmp_path)
    session = trained_session(steps=1)
    store.add(session)
    blocker = sqlite3.connect(tmp_path / DATABASE_NAME)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        def save():
            with session.lock:
                session.step = 2
                store.save(session)

        saver, saving = _in_thread(save)
        deadline = time.monotonic() + 10
        while not store._write_lock.locked() and time.monotonic() < deadline:
            time.sleep(0.01)
        deleter, deleting = _in_thread(lambda: store.delete(session.id))
    finally:
        blocker.rollback()
        blocker.close()
    saver.join(10)
    deleter.join(10)
    assert "error" not in saving and "error" not in deleting
    assert store.loaded_ids() == [] and store.ids() == []
    with pytest.raises(SessionNotFound):
        store.get(session.id)


def test_two_server_workers_on_one_database_never_lose_a_step(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.hardening.conftest import load_bench_module

    port = load_bench_module().free_port()
    env = {**os.environ, "CNNVIZ_DATA_DIR": str(tmp_path)}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port",
         str(port), "--workers", "2", "--log-level", "warning"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        session_id = httpx.post(f"{base}/api/sessions", json={"preset": "tiny"}).json()["id"]

        def step(_):
            # a new connection each time, so the requests spread over both workers
            return httpx.post(f"{base}/api/sessions/{session_id}/step", json={"batch_size": 4},
                              timeout=60).status_code

        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(step, range(40)))
        print(f"\n200: {statuses.count(200)}, 409: {statuses.count(409)}")
        assert set(statuses) <= {200, 409}, statuses
        steps = [httpx.get(f"{base}/api/sessions/{session_id}").json()["step"] for _ in range(6)]
        assert steps == [statuses.count(200)] * 6, (steps, statuses.count(200))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)


class LockedAtFirst:
    """A connection whose first switches to WAL fail as they do when several server processes
    open a new database at once ("database is locked", at once, without the busy handler)."""

    def __init__(self, connection: sqlite3.Connection, failures: list[int]) -> None:
        self._connection = connection
        self._failures = failures

    def execute(self, sql, *args):
        if sql.startswith("PRAGMA journal_mode") and self._failures[0] > 0:
            self._failures[0] -= 1
            raise sqlite3.OperationalError("database is locked")
        return self._connection.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._connection, name)

    def __enter__(self):
        return self._connection.__enter__()

    def __exit__(self, *exc):
        return self._connection.__exit__(*exc)


def _open_with_locks(monkeypatch, failures: list[int]) -> None:
    import app.persistence as persistence

    connect = sqlite3.connect
    monkeypatch.setattr(persistence.sqlite3, "connect",
                        lambda *args, **kwargs: LockedAtFirst(connect(*args, **kwargs), failures))


def test_a_database_other_processes_are_switching_to_wal_opens_once_they_are_done(
        tmp_path, monkeypatch):
    failures = [3]
    _open_with_locks(monkeypatch, failures)
    store = SQLiteSessionStore(tmp_path, max_sessions=4, max_bytes=10**8, idle_seconds=3600.0,
                               max_file_bytes=10**7)
    session = Session.create(TINY)
    store.add(session)
    assert failures == [0]  # every refusal was met by a new try ...
    monkeypatch.undo()
    again = SQLiteSessionStore(tmp_path, max_sessions=4, max_bytes=10**8, idle_seconds=3600.0,
                               max_file_bytes=10**7)
    assert again.get(session.id).step == session.step  # ... and the store works
    store.close()
    again.close()


def test_a_database_that_stays_locked_is_refused_after_the_retry_time(tmp_path, monkeypatch):
    import app.persistence as persistence

    monkeypatch.setattr(persistence, "OPEN_RETRY_SECONDS", 0.2)
    _open_with_locks(monkeypatch, [10**6])
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        SQLiteSessionStore(tmp_path, max_sessions=4, max_bytes=10**8, idle_seconds=3600.0,
                           max_file_bytes=10**7)
    assert time.monotonic() - started < 2
