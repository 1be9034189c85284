"""A trace records its input (the PyTorch export's input) apart from the session: the session is
not rewritten, and every server process sharing the store exports the input traced last, by
any of them. Checked on the SQLite and the Redis store, and through the API with two apps on
one database (two server processes)."""

from __future__ import annotations

import io
import json
import sqlite3
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import load as load_safetensors

from app.main import create_app
from app.persistence import DATABASE_NAME, SQLiteSessionStore
from app.redis_store import RedisSessionStore
from app.sessions import Session, TracedInput
from app.settings import Settings
from app.store import SessionNotFound

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from serving import RedisServer  # noqa: E402

TINY = {"input_shape": [1, 6, 6], "loss": "binary_cross_entropy", "seed": 1, "layers": [
    {"type": "conv", "filters": 2, "kernel": 3, "activation": "relu"},
    {"type": "flatten"}, {"type": "dense", "units": 1, "activation": "sigmoid"}]}


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request, tmp_path):
    """``open_store()``: a new store on the same storage each call (another server process)."""
    if request.param == "sqlite":
        yield lambda: SQLiteSessionStore(tmp_path, max_sessions=8, max_bytes=10**8,
                                         idle_seconds=3600.0, max_file_bytes=10**7)
        return
    with RedisServer(tmp_path / "redis", append_only=False) as server:
        yield lambda: RedisSessionStore.from_url(
            server.url, key_prefix="cnnviz", max_sessions=8, max_bytes=10**8,
            idle_seconds=3600.0, evict_idle_seconds=600.0, max_file_bytes=10**7)


def traced_input(seed: int) -> TracedInput:
    rng = np.random.default_rng(seed)
    return TracedInput(x=rng.random((1, 6, 6), dtype=np.float32), target=np.array([1.0]),
                       digit=seed % 10, source={"dataset": "mnist", "split": "train",
                                                "index": seed})


def assert_same_input(found: TracedInput | None, expected: TracedInput) -> None:
    assert found is not None
    assert found.x.dtype == expected.x.dtype and found.x.tobytes() == expected.x.tobytes()
    assert found.target.dtype == expected.target.dtype
    assert found.target.tobytes() == expected.target.tobytes()
    assert (found.digit, found.source) == (expected.digit, expected.source)


def test_a_recorded_input_reaches_other_processes_without_rewriting_the_session(open_store):
    here, there = open_store(), open_store()
    session = Session.create(TINY)
    here.add(session)
    copy_there = there.get(session.id)
    recorded = traced_input(5)
    with session.lock:
        session.last_input = recorded
        here.remember_input(session)
    # The session was not saved: the other process keeps its loaded copy (a save would have
    # made it read the new version), and only its last input is refreshed.
    assert there.get(session.id) is copy_there and copy_there.last_input is None
    with copy_there.lock:
        there.refresh_last_input(copy_there)
    assert_same_input(copy_there.last_input, recorded)
    assert_same_input(open_store().get(session.id).last_input, recorded)  # after a restart


def test_a_save_records_the_input_it_carries_over_an_older_trace(open_store):
    here = open_store()
    session = Session.create(TINY)
    here.add(session)
    with session.lock:
        session.last_input = traced_input(1)
        here.remember_input(session)
        session.last_input = traced_input(2)  # a step's first sample
        session.step = 1
        here.save(session)
    restarted = open_store().get(session.id)
    assert restarted.step == 1
    assert_same_input(restarted.last_input, traced_input(2))


def test_recording_the_input_of_a_deleted_session_does_not_bring_it_back(open_store):
    here = open_store()
    session = Session.create(TINY)
    here.add(session)
    here.delete(session.id)
    with session.lock:
        session.last_input = traced_input(3)
        here.remember_input(session)
    with pytest.raises(SessionNotFound):
        open_store().get(session.id)


def test_a_deleted_sessions_input_row_goes_with_it(tmp_path):
    store = SQLiteSessionStore(tmp_path, max_sessions=8, max_bytes=10**8, idle_seconds=3600.0,
                               max_file_bytes=10**7)
    kept, deleted = Session.create(TINY), Session.create(TINY)
    for session in (kept, deleted):
        store.add(session)
        with session.lock:
            session.last_input = traced_input(4)
            store.remember_input(session)
    store.delete(deleted.id)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as database:
        rows = database.execute("SELECT id FROM last_inputs").fetchall()
    assert rows == [(kept.id,)]


def exported_input(client: TestClient, session_id: str) -> tuple[dict, np.ndarray]:
    """The source and input tensor of the session's PyTorch export."""
    answer = client.get(f"/api/sessions/{session_id}/export", params={"format": "pytorch"})
    assert answer.status_code == 200, answer.text
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        data = archive.read("input.safetensors")
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    return json.loads(header["__metadata__"]["source"]), load_safetensors(data)["input"]


def test_each_server_process_exports_the_input_traced_last_by_any_of_them(tmp_path):
    settings = Settings(data_dir=tmp_path)  # the default SQLite store, shared by two "processes"
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        session_id = first.post("/api/sessions", json={"preset": "tiny", "seed": 1}).json()["id"]
        assert first.post(f"/api/sessions/{session_id}/trace",
                          json={"input": {"dataset": "mnist", "index": 5}}).status_code == 200
        source, _ = exported_input(second, session_id)  # the second process loads its copy
        assert source["index"] == 5
        traced = first.post(f"/api/sessions/{session_id}/trace",
                            json={"input": {"dataset": "mnist", "index": 9}}).json()
        # a what-if (the digit as another label) changes nothing
        assert first.post(f"/api/sessions/{session_id}/trace", json={
            "input": {"dataset": "mnist", "index": 2}, "label": 7}).status_code == 200
        source, pixels = exported_input(second, session_id)
        assert source == {"dataset": "mnist", "split": "train", "index": 9}
        np.testing.assert_array_equal(pixels[0], np.asarray(traced["input"], np.float32))
        # The first process traces 5 again; then the second traces 9, which its own copy still
        # holds as its last input: recorded all the same, so both export 9.
        assert first.post(f"/api/sessions/{session_id}/trace",
                          json={"input": {"dataset": "mnist", "index": 5}}).status_code == 200
        assert second.post(f"/api/sessions/{session_id}/trace",
                           json={"input": {"dataset": "mnist", "index": 9}}).status_code == 200
        assert exported_input(first, session_id)[0]["index"] == 9
