"""A full disk: updates answer 507 in plain words, the session stays at its last acknowledged
version (in memory and on disk, across a restart), and everything works again once there is
room. The disk is filled with SQLite's own page limit, so the test needs no special mount
(bench/adversarial.py also runs it on a real, tiny tmpfs)."""

import sqlite3

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from app.storage_errors import is_disk_full


class _FullDisk:
    """The store's SQLite connection on a disk with no room left: every write fails the way
    SQLite reports it (reads still work, as they do on a real full disk)."""

    def __init__(self, connection):
        self.connection = connection

    def execute(self, sql, *args):
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            raise sqlite3.OperationalError("database or disk is full")
        return self.connection.execute(sql, *args)

    def __enter__(self):
        return self.connection.__enter__()

    def __exit__(self, *exc):
        return self.connection.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self.connection, name)


# the store's reads, its saves and the traces' last inputs
CONNECTIONS = ("_connection", "_save_connection", "_input_connection")


def _fill_the_disk(app) -> None:
    store = app.state.store
    store._db, store._save_db, store._input_db  # opened
    for name in CONNECTIONS:
        setattr(store, name, _FullDisk(getattr(store, name)))


def _room_again(app) -> None:
    store = app.state.store
    for name in CONNECTIONS:
        setattr(store, name, getattr(store, name).connection)


def test_updates_on_a_full_disk_answer_507_and_change_nothing(tmp_path):
    settings = Settings(session_store="sqlite", data_dir=tmp_path)
    app = create_app(settings)
    with TestClient(app) as client:
        session_id = client.post("/api/sessions", json={"preset": "lenet5"}).json()["id"]
        for _ in range(2):
            assert client.post(f"/api/sessions/{session_id}/step",
                               json={"batch_size": 4}).status_code == 200
        acknowledged = client.get(f"/api/sessions/{session_id}/export").content
        _fill_the_disk(app)
        for path, body in [("step", {"batch_size": 4}), ("train", {"steps": 3, "batch_size": 4}),
                           ("evaluate", {"limit": 10}), ("step", {"batch_size": 4})]:
            response = client.post(f"/api/sessions/{session_id}/{path}", json=body)
            assert response.status_code == 507, path
            detail = response.json()["detail"]
            assert "disk space" in detail and "not saved" in detail
            assert "sqlite" not in detail.lower()
        created = client.post("/api/sessions", json={"preset": "tiny"})
        assert created.status_code == 507
        state = client.get(f"/api/sessions/{session_id}").json()
        assert state["step"] == 2
        history = client.get(f"/api/sessions/{session_id}/history").json()
        assert history["steps"] == [1, 2] and history["evaluations"] == []
        assert client.get(f"/api/sessions/{session_id}/export").content[:2] == acknowledged[:2]
        _room_again(app)
        assert client.post(f"/api/sessions/{session_id}/step",
                           json={"batch_size": 4}).json()["step"] == 3
    with TestClient(create_app(settings)) as client:  # a restart reads what was acknowledged
        assert client.get(f"/api/sessions/{session_id}").json()["step"] == 3
        assert client.get(f"/api/sessions/{session_id}/history").json()["steps"] == [1, 2, 3]


def test_a_full_disk_restores_the_weights_too(tmp_path):
    app = create_app(Settings(session_store="sqlite", data_dir=tmp_path))
    with TestClient(app) as client:
        session_id = client.post("/api/sessions", json={"preset": "tiny"}).json()["id"]
        client.post(f"/api/sessions/{session_id}/step", json={"batch_size": 4,
                                                               "optimizer": "momentum"})
        session = app.state.store.get(session_id)
        weights = session.network.state_dict()
        velocity = session.optimizer.state_dict()
        _fill_the_disk(app)
        assert client.post(f"/api/sessions/{session_id}/step",
                           json={"batch_size": 4, "optimizer": "momentum"}).status_code == 507
        for key, value in session.network.state_dict().items():
            assert (value == weights[key]).all(), key
        for key, value in session.optimizer.state_dict().items():
            assert (value == velocity[key]) if not hasattr(value, "shape") else (
                value == velocity[key]).all(), key


def test_a_trace_on_a_full_disk_still_answers(tmp_path):
    """A trace changes no weights; only the remembered input (for the PyTorch export) cannot be
    written, and the trace answers all the same."""
    app = create_app(Settings(session_store="sqlite", data_dir=tmp_path))
    with TestClient(app) as client:
        session_id = client.post("/api/sessions", json={"preset": "tiny"}).json()["id"]
        _fill_the_disk(app)
        for index in (0, 1):
            response = client.post(f"/api/sessions/{session_id}/trace",
                                   json={"input": {"dataset": "mnist", "index": index}})
            assert response.status_code == 200, index
        assert client.get(f"/api/sessions/{session_id}").json()["step"] == 0


@pytest.mark.parametrize("error, full", [
    (sqlite3.OperationalError("database or disk is full"), True),
    (sqlite3.OperationalError("database is locked"), False),
    (OSError(28, "No space left on device"), True),
    (OSError(2, "No such file"), False),
])
def test_disk_full_is_recognised(error, full):
    assert is_disk_full(error) is full


def test_other_database_failures_answer_503(tmp_path, monkeypatch):
    app = create_app(Settings(session_store="sqlite", data_dir=tmp_path))
    with TestClient(app) as client:
        session_id = client.post("/api/sessions", json={"preset": "tiny"}).json()["id"]

        def locked(*args, **kwargs):
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(type(app.state.store), "save", locked)
        response = client.post(f"/api/sessions/{session_id}/step", json={"batch_size": 4})
        assert response.status_code == 503 and "nothing was changed" in response.json()["detail"]
        assert client.get(f"/api/sessions/{session_id}").json()["step"] == 0
