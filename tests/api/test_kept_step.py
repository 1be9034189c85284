"""GET /api/sessions/{id}/steps/{step}: the latest step's answer again, with the fields asked.

The page asks a step for its maps only and fetches the weights and gradients of the same step
afterwards; a step cannot be taken twice, so the server keeps its arrays in memory. Two sessions
built alike take the same steps (the engine is deterministic): one answers everything at once,
the other answers the maps and then the rest through the kept step."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.serialize import array_bytes
from app.settings import Settings

from .conftest import create, snapshot

MAPS = "z,a,delta,grad_a,argmax"
EVERYTHING = "z,a,delta,grad_a,grads,params,argmax"
STEP = {"batch_size": 4, "learning_rate": 0.1, "optimizer": "momentum"}
NETWORKS = {"lenet5": {"preset": "lenet5", "seed": 0}, "tiny": {"preset": "tiny", "seed": 1}}


def _step(client, session_id, **query):
    response = client.post(f"/api/sessions/{session_id}/step", json=STEP, params=query)
    assert response.status_code == 200, response.text
    return response


def _kept(client, session_id, step, **query):
    return client.get(f"/api/sessions/{session_id}/steps/{step}", params=query)


@pytest.mark.parametrize("network", sorted(NETWORKS))
@pytest.mark.parametrize("answer_format", ["json", "safetensors"])
def test_kept_step_answers_exactly_what_the_full_step_answer_held(client, network,
                                                                  answer_format):
    whole, lazy = (create(client, **NETWORKS[network]) for _ in range(2))
    for number in (1, 2):  # the second step carries the optimizer's state over
        full = _step(client, whole, format=answer_format)
        maps = _step(client, lazy, format=answer_format, fields=MAPS)
        assert len(maps.content) < len(full.content)
        again = _kept(client, lazy, number, format=answer_format)
        assert again.status_code == 200, again.text
        assert again.headers["content-type"] == full.headers["content-type"]
        assert again.content == full.content  # same arrays, same bytes, same order
    for fields in ("grads,params", "grads", MAPS, "", EVERYTHING):
        limited = _kept(client, lazy, 2, format=answer_format, fields=fields)
        # what a step asked for these fields would have answered
        twin = create(client, **NETWORKS[network])
        _step(client, twin)
        expected = _step(client, twin, format=answer_format, fields=fields)
        assert limited.status_code == 200 and limited.content == expected.content, fields


def test_kept_step_changes_nothing_in_the_session(client, app):
    session_id = create(client)
    _step(client, session_id, fields=MAPS)
    before = snapshot(app, session_id)
    for query in ({}, {"fields": "grads,params", "format": "safetensors"}):
        assert _kept(client, session_id, 1, **query).status_code == 200
    snapshot(app, session_id).assert_same_as(before)
    # and the step answers the same again: the kept arrays were not edited by being sent
    assert _kept(client, session_id, 1).json() == _kept(client, session_id, 1).json()


def test_a_newer_step_or_training_replaces_the_kept_step(client):
    session_id = create(client, preset="tiny", seed=1)
    _step(client, session_id)
    _step(client, session_id)
    gone = _kept(client, session_id, 1)
    assert gone.status_code == 409
    assert gone.json()["detail"] == (
        "the weights and gradients of step 1 are no longer available (the session has moved on "
        "to step 2): only the latest step's are kept, for a while, by the server that took it. "
        "Take another step to see them.")
    assert _kept(client, session_id, 2).status_code == 200
    trained = client.post(f"/api/sessions/{session_id}/train",
                          json={"steps": 2, "batch_size": 2})
    assert trained.status_code == 200, trained.text
    assert _kept(client, session_id, 2).status_code == 409
    assert _kept(client, session_id, 4).status_code == 409  # trained steps are not kept
    _step(client, session_id)
    assert _kept(client, session_id, 5).status_code == 200


def test_a_step_not_taken_yet_is_404_in_plain_words(client):
    session_id = create(client, preset="tiny", seed=1)
    never = _kept(client, session_id, 1)
    assert never.status_code == 404
    assert never.json()["detail"] == ("this session has taken 0 steps so far; step 1 has not "
                                      "happened")
    _step(client, session_id)
    assert _kept(client, session_id, 2).json()["detail"].startswith(
        "this session has taken 1 step so far")


@pytest.mark.parametrize("path, status", [
    ("steps/0", 422), ("steps/-1", 422), ("steps/last", 422), ("steps/1.5", 422)])
def test_a_step_number_that_is_not_a_positive_integer_is_422(client, path, status):
    session_id = create(client, preset="tiny", seed=1)
    _step(client, session_id)
    assert client.get(f"/api/sessions/{session_id}/{path}").status_code == status


def test_bad_format_or_field_is_422(client):
    session_id = create(client, preset="tiny", seed=1)
    _step(client, session_id)
    assert _kept(client, session_id, 1, format="xml").status_code == 422
    refused = _kept(client, session_id, 1, fields="z,weights")
    assert refused.status_code == 422 and "unknown field 'weights'" in str(refused.json())


def test_kept_arrays_count_in_the_session_memory_and_go_with_training(client, app):
    session_id = create(client)
    session = app.state.store.get(session_id)
    _step(client, session_id, fields=MAPS)
    kept = session.last_step
    assert kept.nbytes == array_bytes(kept.answer) > 200_000  # LeNet-5's weights twice and more
    with_kept = session.memory_bytes()
    with session.lock:
        session.last_step = None
        assert session.memory_bytes() == with_kept - kept.nbytes
        session.last_step = kept
    client.post(f"/api/sessions/{session_id}/train", json={"steps": 1, "batch_size": 2})
    assert session.last_step is None
    assert session.memory_bytes() < with_kept - kept.nbytes + 1000  # one more history entry


def test_kept_step_is_not_in_the_session_file_nor_after_a_restart(tmp_path):
    settings = Settings(data_dir=tmp_path, session_store="sqlite")
    with TestClient(create_app(settings)) as first:
        session_id = create(first, preset="tiny", seed=1)
        _step(first, session_id, fields=MAPS)
        assert _kept(first, session_id, 1).status_code == 200
        exported = first.get(f"/api/sessions/{session_id}/export")
        assert exported.status_code == 200 and b"last_step" not in exported.content
    with TestClient(create_app(settings)) as restarted:
        assert restarted.get(f"/api/sessions/{session_id}").json()["step"] == 1
        gone = _kept(restarted, session_id, 1)
        assert gone.status_code == 409
        assert "no longer available" in gone.json()["detail"]


def test_a_refused_step_keeps_the_previous_kept_step(client):
    session_id = create(client, preset="tiny", seed=1)
    _step(client, session_id)
    refused = client.post(f"/api/sessions/{session_id}/step",
                          json={"batch_size": 2, "input": {"dataset": "mnist", "index": 10**9}})
    assert refused.status_code == 422
    assert _kept(client, session_id, 1).status_code == 200


def test_openapi_documents_the_kept_step(client):
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/api/sessions/{session_id}/steps/{step}"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert parameters["step"]["in"] == "path"
    assert parameters["step"]["schema"]["type"] == "integer"
    assert parameters["step"]["schema"]["minimum"] == 1
    assert {"format", "fields"} <= set(parameters)
    assert {"200", "404", "409", "422"} <= set(operation["responses"])
    content = operation["responses"]["200"]["content"]
    assert {"application/json", "application/octet-stream"} <= set(content)


def test_a_step_whose_save_fails_leaves_the_previous_kept_step(client, app, monkeypatch):
    session_id = create(client, preset="tiny", seed=1)
    _step(client, session_id)
    kept = _kept(client, session_id, 1).content

    def refuse(session):
        raise MemoryError

    monkeypatch.setattr(app.state.store, "save", refuse)
    failed = client.post(f"/api/sessions/{session_id}/step", json=STEP)
    assert failed.status_code == 503
    monkeypatch.undo()
    assert _kept(client, session_id, 1).content == kept  # the session is back at step 1
    assert _kept(client, session_id, 2).status_code == 404
