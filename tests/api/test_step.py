"""POST /api/sessions/{id}/step: one training iteration, its answer, and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import train_split

from .conftest import LINEAR_MSE_SPEC, create, mnist_digit, snapshot


def _step(client, session_id, **body):
    return client.post(f"/api/sessions/{session_id}/step", json=body)


def _arrays(params):
    return [{key: np.asarray(value, np.float32) for key, value in layer.items()} for layer in params]


def test_step_answers_the_design_fields_and_the_extras(client):
    session_id = create(client)
    answer = _step(client, session_id, batch_size=8, learning_rate=0.05, optimizer="sgd").json()
    for key in ("step", "loss", "trace", "params_before", "params_after", "loss_after",
                "batch_accuracy", "batch_grads", "optimizer", "learning_rate", "batch_indices"):
        assert key in answer, key
    assert answer["step"] == 1 and answer["optimizer"] == "sgd" and answer["learning_rate"] == 0.05
    assert answer["batch_indices"] == list(range(8))
    assert 0 <= answer["batch_accuracy"] <= 1
    assert len(answer["params_before"]) == len(answer["params_after"]) == 8
    assert answer["params_before"][1] == {} and set(answer["params_before"][0]) == {"W", "b"}
    assert answer["trace"]["source"] == {"dataset": "mnist", "split": "train", "index": 0}
    assert client.get(f"/api/sessions/{session_id}").json()["step"] == 1


def test_sgd_step_moves_params_by_minus_lr_times_the_reported_batch_gradient(client):
    session_id = create(client)
    answer = _step(client, session_id, batch_size=16, learning_rate=0.1, optimizer="sgd").json()
    before, after = _arrays(answer["params_before"]), _arrays(answer["params_after"])
    grads = _arrays(answer["batch_grads"])
    for b, a, g in zip(before, after, grads):
        for key in b:
            np.testing.assert_allclose(a[key], b[key] - np.float32(0.1) * g[key], atol=1e-6)
    assert answer["loss_after"] < answer["loss"]


def test_step_trace_is_the_first_sample_alone_before_the_update(client):
    session_id = create(client)
    answer = _step(client, session_id, batch_size=4).json()
    params = [layer["params"] for layer in answer["trace"]["layers"]]
    for traced, before in zip(_arrays(params), _arrays(answer["params_before"])):
        for key in before:
            np.testing.assert_array_equal(traced[key], before[key])
    alone = client.post(f"/api/sessions/{create(client)}/trace",
                        json={"input": {"dataset": "mnist", "index": 0}}).json()
    assert answer["trace"]["loss"] == pytest.approx(alone["loss"], rel=1e-6)


def test_steps_walk_through_the_training_split_and_params_chain(client):
    session_id = create(client)
    first = _step(client, session_id, batch_size=5).json()
    second = _step(client, session_id, batch_size=3).json()
    assert second["batch_indices"] == [5, 6, 7]
    for a, b in zip(_arrays(first["params_after"]), _arrays(second["params_before"])):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    history = client.get(f"/api/sessions/{session_id}/history").json()
    assert history["steps"] == [1, 2]
    assert history["loss"] == [first["loss"], second["loss"]]
    assert history["accuracy"] == [first["batch_accuracy"], second["batch_accuracy"]]


def test_step_with_given_pixels_puts_them_first_in_the_batch(client):
    session_id = create(client)
    answer = _step(client, session_id, batch_size=4, input={"pixels": mnist_digit(9)},
                   label=2).json()
    assert answer["batch_indices"] == [None, 0, 1, 2]
    assert answer["trace"]["label"] == 2 and answer["trace"]["source"] == {"pixels": True}
    nxt = _step(client, session_id, batch_size=2).json()
    assert nxt["batch_indices"] == [3, 4]


def test_step_of_batch_one_with_given_pixels_trains_on_them_alone(client):
    session_id = create(client)
    answer = _step(client, session_id, batch_size=1, input={"pixels": mnist_digit(9)},
                   label=2).json()
    assert answer["batch_indices"] == [None] and answer["loss"] == answer["trace"]["loss"]
    assert _step(client, session_id, batch_size=1).json()["batch_indices"] == [0]


def test_step_with_a_dataset_sample_puts_it_first(client):
    session_id = create(client)
    answer = _step(client, session_id, batch_size=2,
                   input={"dataset": "mnist", "index": 77, "split": "test"}).json()
    assert answer["trace"]["source"] == {"dataset": "mnist", "split": "test", "index": 77}
    assert answer["batch_indices"] == [None, 0]


@pytest.mark.parametrize("optimizer, extra", [
    ("momentum", {"momentum": 0.5}), ("adam", {"beta1": 0.8, "eps": 1e-7}), ("adam", {})])
def test_momentum_and_adam_keep_their_state_across_steps(client, app, optimizer, extra):
    session_id = create(client)
    for _ in range(2):
        answer = _step(client, session_id, batch_size=4, learning_rate=0.01, optimizer=optimizer,
                       **extra).json()
    assert answer["optimizer"] == optimizer
    state = app.state.store.get(session_id).optimizer.state_dict()
    assert state["steps"] == 2
    for key, value in extra.items():
        assert state[key] == value


def test_switching_optimizer_starts_its_state_fresh(client, app):
    session_id = create(client)
    _step(client, session_id, batch_size=2, optimizer="adam", learning_rate=0.001)
    _step(client, session_id, batch_size=2, optimizer="momentum", learning_rate=0.01)
    optimizer = app.state.store.get(session_id).optimizer
    assert optimizer.name == "momentum" and optimizer.state_dict()["steps"] == 1


def test_changing_learning_rate_keeps_momentum_state(client, app):
    session_id = create(client)
    _step(client, session_id, batch_size=2, optimizer="momentum", learning_rate=0.01)
    _step(client, session_id, batch_size=2, optimizer="momentum", learning_rate=0.02)
    optimizer = app.state.store.get(session_id).optimizer
    assert optimizer.learning_rate == 0.02 and optimizer.state_dict()["steps"] == 2


BAD_STEP_BODIES = {
    "batch size 0": {"batch_size": 0},
    "batch size over the cap": {"batch_size": 257},
    "batch size as string": {"batch_size": "32"},
    "batch size float": {"batch_size": 3.5},
    "learning rate 0": {"learning_rate": 0},
    "learning rate negative": {"learning_rate": -0.1},
    "learning rate over the cap": {"learning_rate": 11},
    "learning rate NaN": {"learning_rate": float("nan")},
    "learning rate infinity": {"learning_rate": float("inf")},
    "learning rate as string": {"learning_rate": "fast"},
    "unknown optimizer": {"optimizer": "rmsprop"},
    "momentum with sgd": {"optimizer": "sgd", "momentum": 0.9},
    "beta1 with momentum": {"optimizer": "momentum", "beta1": 0.9},
    "momentum 1": {"optimizer": "momentum", "momentum": 1.0},
    "pixels with NaN": {"input": {"pixels": [[float("nan")] * 28] * 28}, "label": 1},
    "pixels wrong shape": {"input": {"pixels": [[0.0] * 28] * 5}, "label": 1},
    "index out of range": {"input": {"dataset": "mnist", "index": 10**6}},
    "unknown key": {"batch": 3},
    "body is a list": [1, 2],
}


@pytest.mark.parametrize("name", sorted(BAD_STEP_BODIES))
def test_bad_step_request_is_422_and_leaves_the_session_unchanged(client, app, name):
    session_id = create(client)
    _step(client, session_id, batch_size=4, optimizer="momentum", learning_rate=0.01)
    before = snapshot(app, session_id)
    response = client.post(f"/api/sessions/{session_id}/step",
                           content=json.dumps(BAD_STEP_BODIES[name]),
                           headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    snapshot(app, session_id).assert_same_as(before)


def test_malformed_step_json_is_422_and_leaves_the_session_unchanged(client, app):
    session_id = create(client)
    before = snapshot(app, session_id)
    response = client.post(f"/api/sessions/{session_id}/step", content=b"{batch_size: 4}",
                           headers={"content-type": "application/json"})
    assert response.status_code == 422
    snapshot(app, session_id).assert_same_as(before)


def test_step_on_unknown_session_is_404(client):
    assert _step(client, "no-such-session", batch_size=2).status_code == 404


def test_diverging_update_is_refused_and_the_previous_params_kept(client, app):
    session_id = create(client, spec=LINEAR_MSE_SPEC)
    for _ in range(40):
        before = snapshot(app, session_id)
        response = _step(client, session_id, batch_size=8, learning_rate=10.0)
        if response.status_code != 200:
            break
    assert response.status_code == 422
    assert "diverged" in response.json()["detail"]
    snapshot(app, session_id).assert_same_as(before)
    weights = app.state.store.get(session_id).network.state_dict()
    assert all(np.isfinite(w).all() for w in weights.values())
    assert _step(client, session_id, batch_size=8, learning_rate=1e-6).status_code == 200


def test_labels_beyond_a_small_softmax_never_enter_a_batch(client):
    spec = {"input_shape": [1, 28, 28],
            "layers": [{"type": "flatten"}, {"type": "dense", "units": 4, "activation": "softmax"}],
            "loss": "cross_entropy"}
    session_id = create(client, spec=spec)
    answer = _step(client, session_id, batch_size=64).json()
    labels = train_split()[1]
    assert all(labels[i] < 4 for i in answer["batch_indices"])
    assert answer["batch_indices"] == np.flatnonzero(labels < 4)[:64].tolist()
