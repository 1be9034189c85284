"""Export a session as a file, import it back, and refuse anything that is not such a file."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.session_codec import decode_session, encode_session
from app.settings import Settings

from .conftest import create, snapshot


def _export(client, session_id):
    response = client.get(f"/api/sessions/{session_id}/export")
    assert response.status_code == 200
    return response


def _import(client, data: bytes):
    return client.post("/api/sessions/import",
                       files={"file": ("session.npz", data, "application/octet-stream")})


def test_export_is_a_download_and_import_restores_everything_under_a_new_id(client, app):
    session_id = create(client, preset="lenet5", seed=4)
    client.post(f"/api/sessions/{session_id}/train",
                json={"steps": 3, "batch_size": 8, "optimizer": "adam", "learning_rate": 0.001})
    client.post(f"/api/sessions/{session_id}/evaluate", json={"limit": 50})
    response = _export(client, session_id)
    assert response.headers["content-type"] == "application/octet-stream"
    assert 'attachment; filename="cnnviz-lenet5-step3.npz"' == response.headers["content-disposition"]

    imported = _import(client, response.content)
    assert imported.status_code == 201
    body = imported.json()
    assert body["id"] != session_id and body["step"] == 3 and body["preset"] == "lenet5"
    assert body["spec"] == client.get(f"/api/sessions/{session_id}").json()["spec"]
    original, copy = snapshot(app, session_id), snapshot(app, body["id"])
    original.assert_same_as(copy)
    history = client.get(f"/api/sessions/{body['id']}/history").json()
    assert len(history["evaluations"]) == 1


def test_imported_session_trains_on_exactly_like_the_original(client):
    session_id = create(client, preset="tiny")
    options = {"batch_size": 5, "optimizer": "momentum", "learning_rate": 0.3}
    client.post(f"/api/sessions/{session_id}/step", json=options)
    copy_id = _import(client, _export(client, session_id).content).json()["id"]
    a = client.post(f"/api/sessions/{session_id}/step", json=options).json()
    b = client.post(f"/api/sessions/{copy_id}/step", json=options).json()
    assert a["params_after"] == b["params_after"] and a["batch_indices"] == b["batch_indices"]
    assert a["step"] == b["step"] == 2


def test_codec_round_trip_is_bit_for_bit(client, app):
    session_id = create(client, preset="lenet1989")
    client.post(f"/api/sessions/{session_id}/train",
                json={"steps": 2, "batch_size": 4, "optimizer": "adam", "learning_rate": 0.01})
    session = app.state.store.get(session_id)
    data = encode_session(session)
    restored = decode_session(data, max_bytes=10**8)
    assert restored.id == session.id and restored.created_at == session.created_at
    assert encode_session(restored) == data


def _valid_export(client) -> bytes:
    return _export(client, create(client, preset="tiny")).content


def _rewrite_meta(data: bytes, change) -> bytes:
    with np.load(io.BytesIO(data)) as archive:
        members = {name: archive[name] for name in archive.files}
    meta = json.loads(members["meta.json"].tobytes())
    change(meta, members)
    members["meta.json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    out = io.BytesIO()
    np.savez(out, **members)
    return out.getvalue()


@pytest.mark.parametrize("make_bad, fragment", [
    (lambda good: b"", "not a session file"),
    (lambda good: b"plain text, not a zip", "not a session file"),
    (lambda good: good[: len(good) // 2], "not a session file"),
    (lambda good: _rewrite_meta(good, lambda m, a: m.update(format="other")), "format"),
    (lambda good: _rewrite_meta(good, lambda m, a: m.update(version=99)), "version"),
    (lambda good: _rewrite_meta(good, lambda m, a: m["spec"]["layers"].pop()), "spec"),
    (lambda good: _rewrite_meta(good, lambda m, a: m.update(step=-3)), "step"),
    (lambda good: _rewrite_meta(good, lambda m, a: a.pop("net/0.W")), "weights"),
    (lambda good: _rewrite_meta(good, lambda m, a: a.update({"net/0.W": a["net/0.W"][:1]})),
     "shape"),
    (lambda good: _rewrite_meta(good, lambda m, a: a["net/0.b"].__setitem__(0, np.nan)),
     "NaN"),
    (lambda good: _rewrite_meta(good, lambda m, a: a.update({"history/loss": np.zeros(3)})),
     "history"),
])
def test_foreign_or_corrupt_files_are_refused_with_422(client, make_bad, fragment):
    response = _import(client, make_bad(_valid_export(client)))
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


def test_npz_without_meta_and_zip_bomb_are_refused(client):
    out = io.BytesIO()
    np.savez(out, weights=np.zeros(3))
    assert _import(client, out.getvalue()).status_code == 422


def test_archive_that_unpacks_past_the_cap_is_refused_without_unpacking():
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("meta.json.npy", b"\0" * (4 * 1024 * 1024))
    assert len(bomb.getvalue()) < 64 * 1024
    with TestClient(create_app(Settings(max_session_file_bytes=1024 * 1024))) as client:
        response = _import(client, bomb.getvalue())
        assert response.status_code == 422
        assert "unpacks to more than 1048576" in response.json()["detail"]


def test_pickled_arrays_are_refused_not_loaded(client):
    out = io.BytesIO()
    np.savez(out, **{"meta.json": np.array([{"format": "cnnviz-session"}], dtype=object)})
    response = _import(client, out.getvalue())
    assert response.status_code == 422


def test_export_of_unknown_session_is_404(client):
    assert client.get("/api/sessions/nope/export").status_code == 404


def test_import_without_a_file_is_422(client):
    assert client.post("/api/sessions/import").status_code == 422
