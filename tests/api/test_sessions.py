"""Creating, reading and deleting sessions, and every way to get that wrong."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

from .conftest import create

TINY_SPEC = {"input_shape": [1, 6, 6],
             "layers": [{"type": "conv", "filters": 2, "kernel": 3, "activation": "relu"},
                        {"type": "maxpool", "size": 2}, {"type": "flatten"},
                        {"type": "dense", "units": 1, "activation": "sigmoid"}],
             "loss": "binary_cross_entropy"}


def test_create_from_preset_answers_201_with_id_and_normalized_spec(client):
    response = client.post("/api/sessions", json={"preset": "lenet5", "seed": 7})
    assert response.status_code == 201
    body = response.json()
    assert body["id"] and body["step"] == 0 and body["preset"] == "lenet5"
    assert body["spec"]["seed"] == 7
    assert body["spec"]["layers"][0]["kernel"] == [5, 5]


def test_create_from_spec_fills_defaults_and_seed_overrides(client):
    body = client.post("/api/sessions", json={"spec": TINY_SPEC, "seed": 11}).json()
    assert body["spec"]["seed"] == 11 and body["spec"]["dtype"] == "float32"
    assert body["positive_class"] == 0 and body["preset"] is None
    assert "target 1 when the digit is 0" in body["target_rule"]


def test_same_seed_gives_same_weights_and_other_seed_differs(client, app):
    first, second, third = (create(client, preset="lenet5", seed=s) for s in (1, 1, 2))
    weights = [app.state.store.get(i).network.state_dict()["0.W"] for i in (first, second, third)]
    assert (weights[0] == weights[1]).all() and not (weights[0] == weights[2]).all()


def test_get_session_answers_id_spec_step(client):
    session_id = create(client)
    body = client.get(f"/api/sessions/{session_id}").json()
    assert body["id"] == session_id and body["step"] == 0 and body["spec"]["input_shape"] == [1, 28, 28]
    assert body["optimizer"] is None and body["learning_rate"] is None


def test_delete_answers_204_then_the_session_is_gone(client):
    session_id = create(client)
    assert client.delete(f"/api/sessions/{session_id}").status_code == 204
    for response in (client.get(f"/api/sessions/{session_id}"),
                     client.delete(f"/api/sessions/{session_id}"),
                     client.post(f"/api/sessions/{session_id}/trace",
                                 json={"input": {"dataset": "mnist", "index": 0}})):
        assert response.status_code == 404
        assert session_id in response.json()["detail"]


def test_unknown_preset_is_404_naming_the_choices(client):
    response = client.post("/api/sessions", json={"preset": "resnet152"})
    assert response.status_code == 404
    assert "resnet152" in response.json()["detail"] and "lenet5" in response.json()["detail"]


@pytest.mark.parametrize("spec, fragment", [
    ({**TINY_SPEC, "layers": [{"type": "conv", "filters": 2, "kernel": 9}] + TINY_SPEC["layers"][1:]},
     "layer 0 (conv)"),
    ({**TINY_SPEC, "layers": TINY_SPEC["layers"][:2] + [{"type": "dense", "units": 1}]},
     "layer 2 (dense)"),
    ({**TINY_SPEC, "layers": TINY_SPEC["layers"][:3] + [{"type": "dense", "units": 3,
                                                         "activation": "softmax"}]},
     "layer 3 (dense)"),
    ({**TINY_SPEC, "layers": [{"type": "pool"}]}, "layer 0"),
    ({**TINY_SPEC, "input_shape": [1, 6]}, "input_shape"),
    ({**TINY_SPEC, "extra": 1}, "extra"),
])
def test_invalid_spec_is_422_naming_the_layer(client, spec, fragment):
    response = client.post("/api/sessions", json={"spec": spec})
    assert response.status_code == 422
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize("body", [
    {},
    {"preset": "lenet5", "spec": TINY_SPEC},
    {"preset": 5},
    {"preset": "lenet5", "seed": "1"},
    {"preset": "lenet5", "seed": -1},
    {"preset": "lenet5", "seed": 2**40},
    {"preset": "lenet5", "seed": 1.5},
    {"preset": "lenet5", "colour": "red"},
    {"spec": "not an object"},
    {"preset": "tiny", "positive_class": 10},
    [],
    "lenet5",
])
def test_malformed_create_bodies_are_422_with_detail(client, body):
    response = client.post("/api/sessions", json=body)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_malformed_json_is_422(client):
    response = client.post("/api/sessions", content=b'{"preset": "lenet5",',
                           headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_positive_class_only_fits_a_single_output_network(client):
    response = client.post("/api/sessions", json={"preset": "lenet5", "positive_class": 3})
    assert response.status_code == 422 and "single output" in response.json()["detail"]
    body = client.post("/api/sessions", json={"preset": "tiny", "positive_class": 7}).json()
    assert body["positive_class"] == 7


def test_store_refuses_sessions_beyond_the_count_cap_with_429_naming_it():
    with TestClient(create_app(Settings(max_sessions=2))) as client:
        create(client)
        create(client, preset="tiny")
        response = client.post("/api/sessions", json={"preset": "tiny"})
        assert response.status_code == 429
        assert response.json()["cap"] == "max_sessions"
        assert "maximum of 2 sessions" in response.json()["detail"]
        assert "CNNVIZ" not in response.json()["detail"]


def test_store_refuses_a_session_beyond_the_memory_cap_with_429_naming_it():
    # lenet5 has 61,706 float32 parameters; with room for optimizer state that is ~740 kB.
    with TestClient(create_app(Settings(max_store_bytes=500_000))) as client:
        create(client, preset="tiny")
        response = client.post("/api/sessions", json={"preset": "lenet5"})
        assert response.status_code == 429
        assert response.json()["cap"] == "max_store_bytes"
