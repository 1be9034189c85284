"""Training several steps at once, held-out evaluation, and the history."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import LINEAR_MSE_SPEC, create, snapshot


def test_train_runs_n_steps_and_returns_their_history(client):
    session_id = create(client, preset="mlp")
    answer = client.post(f"/api/sessions/{session_id}/train",
                         json={"steps": 5, "batch_size": 10, "learning_rate": 0.1}).json()
    assert answer["step"] == 5 and answer["steps_run"] == 5
    assert answer["history"]["steps"] == [1, 2, 3, 4, 5]
    assert answer["loss"] == answer["history"]["loss"][-1]
    session = client.get(f"/api/sessions/{session_id}").json()
    assert session["step"] == 5 and session["cursor"] == 50 and session["optimizer"] == "sgd"
    history = client.get(f"/api/sessions/{session_id}/history").json()
    assert history["steps"] == [1, 2, 3, 4, 5] and history["loss"] == answer["history"]["loss"]


def test_train_equals_the_same_number_of_single_steps(client, app):
    trained, stepped = create(client, preset="tiny"), create(client, preset="tiny")
    options = {"batch_size": 6, "learning_rate": 0.5, "optimizer": "adam"}
    client.post(f"/api/sessions/{trained}/train", json={"steps": 4, **options})
    for _ in range(4):
        client.post(f"/api/sessions/{stepped}/step", json=options)
    a, b = snapshot(app, trained), snapshot(app, stepped)
    a.assert_same_as(b)


def test_history_since_returns_only_newer_steps(client):
    session_id = create(client, preset="tiny")
    client.post(f"/api/sessions/{session_id}/train", json={"steps": 6, "batch_size": 2})
    history = client.get(f"/api/sessions/{session_id}/history", params={"since": 4}).json()
    assert history["step"] == 6 and history["steps"] == [5, 6] and len(history["loss"]) == 2


@pytest.mark.parametrize("body", [
    {"steps": 0}, {"steps": 501}, {"steps": "10"}, {"steps": 3, "batch_size": 0},
    {"steps": 3, "learning_rate": 100}, {"steps": 3, "optimizer": "lbfgs"},
    {"steps": 3, "input": {"dataset": "mnist", "index": 0}},
    {"steps": 500, "batch_size": 256},
])
def test_bad_train_request_is_422_and_changes_nothing(client, app, body):
    session_id = create(client, preset="tiny")
    before = snapshot(app, session_id)
    response = client.post(f"/api/sessions/{session_id}/train", json=body)
    assert response.status_code == 422 and response.json()["detail"]
    snapshot(app, session_id).assert_same_as(before)


def test_train_that_diverges_part_way_is_refused_as_a_whole(client, app):
    session_id = create(client, spec=LINEAR_MSE_SPEC)
    client.post(f"/api/sessions/{session_id}/step", json={"batch_size": 4, "learning_rate": 1e-4})
    before = snapshot(app, session_id)
    response = client.post(f"/api/sessions/{session_id}/train",
                           json={"steps": 100, "batch_size": 8, "learning_rate": 10.0})
    assert response.status_code == 422 and "diverged" in response.json()["detail"]
    snapshot(app, session_id).assert_same_as(before)


def test_evaluate_scores_the_test_split_and_records_it(client):
    session_id = create(client, preset="tiny", positive_class=1)
    answer = client.post(f"/api/sessions/{session_id}/evaluate", json={"limit": 200}).json()
    assert answer["samples"] == 200 and answer["split"] == "test" and answer["step"] == 0
    assert 0 <= answer["accuracy"] <= 1 and np.isfinite(answer["loss"])
    default = client.post(f"/api/sessions/{session_id}/evaluate").json()
    assert default["samples"] == 1000
    history = client.get(f"/api/sessions/{session_id}/history").json()
    assert [e["samples"] for e in history["evaluations"]] == [200, 1000]


def test_evaluate_leaves_out_the_test_digits_the_user_trained_on(client):
    """Step puts the chosen input in every batch: a test digit stepped on is no longer held out."""
    session_id = create(client, preset="mlp")
    every = client.post(f"/api/sessions/{session_id}/evaluate", json={"limit": 1}).json()
    first_only = client.post(f"/api/sessions/{session_id}/evaluate",
                             json={"limit": 1, "exclude": [0]}).json()
    assert every["samples"] == first_only["samples"] == 1
    # test #0 (a 7) and #1 (a 2) give different losses: the second score is test #1's
    second = client.post(f"/api/sessions/{session_id}/trace",
                         json={"input": {"dataset": "mnist", "split": "test", "index": 1}}).json()
    assert first_only["loss"] == pytest.approx(second["loss"], rel=1e-5)
    assert every["loss"] != pytest.approx(first_only["loss"], rel=1e-5)
    for bad in ([-1], [0.5], "0"):
        response = client.post(f"/api/sessions/{session_id}/evaluate", json={"exclude": bad})
        assert response.status_code == 422, bad
    everything = client.post(f"/api/sessions/{session_id}/evaluate",
                             json={"exclude": list(range(10_000))})
    assert everything.status_code == 422 and "no test digit is left" in everything.json()["detail"]


@pytest.mark.parametrize("body", [{"limit": 0}, {"limit": 1001}, {"limit": "all"}, {"split": "x"}])
def test_bad_evaluate_request_is_422(client, body):
    session_id = create(client, preset="tiny")
    response = client.post(f"/api/sessions/{session_id}/evaluate", json=body)
    assert response.status_code == 422


@pytest.mark.slow
def test_200_steps_take_lenet5_above_90_percent_held_out_accuracy(client):
    session_id = create(client, preset="lenet5", seed=0)
    trained = client.post(f"/api/sessions/{session_id}/train",
                          json={"steps": 200, "batch_size": 64, "learning_rate": 0.05,
                                "optimizer": "momentum"})
    assert trained.status_code == 200 and trained.json()["step"] == 200
    evaluation = client.post(f"/api/sessions/{session_id}/evaluate", json={"limit": 1000}).json()
    assert evaluation["samples"] == 1000
    assert evaluation["accuracy"] > 0.90, evaluation


def test_evaluate_answers_the_confusion_matrix_and_the_misclassified_digits(client, app):
    session_id = create(client, preset="mlp")
    client.post(f"/api/sessions/{session_id}/train",
                json={"steps": 20, "batch_size": 32, "learning_rate": 0.1})
    answer = client.post(f"/api/sessions/{session_id}/evaluate", json={"limit": 300}).json()
    confusion = np.array(answer["confusion"])
    assert answer["classes"] == 10 and confusion.shape == (10, 10)
    assert confusion.sum() == 300 and answer["accuracy"] == np.trace(confusion) / 300
    assert answer["misclassified_count"] == 300 - np.trace(confusion) > 0

    # Each listed digit is really misclassified, by the engine's own forward pass.
    from app.datasets import split_arrays, fit_to_input
    session = app.state.store.get(session_id)
    images, labels = split_arrays("test")
    wrong = answer["misclassified"]
    assert len(wrong) == min(100, answer["misclassified_count"])
    assert [w["index"] for w in wrong] == sorted(w["index"] for w in wrong)
    outputs = session.network.forward(fit_to_input(images[[w["index"] for w in wrong]],
                                                   session.network.input_shape))
    for row, item in enumerate(wrong):
        assert item["label"] == item["true_class"] == labels[item["index"]]
        assert item["predicted"] == outputs[row].argmax() != item["label"]
        assert item["probability"] == pytest.approx(outputs[row, item["predicted"]], rel=1e-5)
    # row sums are the digits' counts among the first 300 test samples
    assert confusion.sum(axis=1).tolist() == np.bincount(labels[:300], minlength=10).tolist()
    history = client.get(f"/api/sessions/{session_id}/history").json()
    assert "confusion" not in history["evaluations"][0]


def test_evaluate_of_a_single_output_network_is_a_two_class_confusion(client):
    session_id = create(client, preset="tiny", positive_class=3)
    answer = client.post(f"/api/sessions/{session_id}/evaluate", json={"limit": 100}).json()
    confusion = np.array(answer["confusion"])
    assert answer["classes"] == 2 and confusion.shape == (2, 2) and confusion.sum() == 100
    for item in answer["misclassified"]:
        assert item["true_class"] == int(item["label"] == 3) != item["predicted"]
        assert 0.5 <= item["probability"] <= 1


def test_evaluate_lists_at_most_100_misclassified_digits(client):
    session_id = create(client, preset="mlp")  # untrained: most digits wrong
    answer = client.post(f"/api/sessions/{session_id}/evaluate", json={"limit": 1000}).json()
    assert answer["misclassified_count"] > 100 and len(answer["misclassified"]) == 100


def test_evaluate_refuses_an_excluded_index_too_large_for_any_split(client):
    session_id = client.post("/api/sessions", json={"preset": "tiny"}).json()["id"]
    response = client.post(f"/api/sessions/{session_id}/evaluate",
                           json={"limit": 10, "exclude": [3, 2**70]})
    assert response.status_code == 422
    assert client.post(f"/api/sessions/{session_id}/evaluate",
                       json={"limit": 10, "exclude": [3, 2**31 - 1]}).status_code == 200
