"""The "worked" preset: the notes' first worked example, read off one trace number by number.

X = [[1,2,3],[4,5,6],[7,8,9]], F = [[1,2],[3,4]], dL/dO = [[1,0],[2,-1]]:
O = correlate(X, F) = [[37,47],[67,77]], dL/dF = correlate(X, dL/dO) = [[4,6],[10,12]],
dL/dX = full convolution of rot180(F) with dL/dO = [[1,2,0],[5,7,-2],[6,5,-4]].
"""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import create, snapshot

X = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]
F = [[1.0, 2.0], [3.0, 4.0]]
O = [[37.0, 47.0], [67.0, 77.0]]
DL_DO = [[1.0, 0.0], [2.0, -1.0]]
DL_DF = [[4.0, 6.0], [10.0, 12.0]]
DL_DX = [[1.0, 2.0, 0.0], [5.0, 7.0, -2.0], [6.0, 5.0, -4.0]]
EXAMPLE = {"input": {"example": "worked"}}


def trace(client, session_id, body):
    response = client.post(f"/api/sessions/{session_id}/trace", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_presets_list_the_worked_example_with_its_weights_and_input(client):
    presets = {p["name"]: p for p in client.get("/api/presets").json()}
    worked = presets["worked"]
    layers = worked["spec"]["layers"]
    assert worked["spec"]["input_shape"] == [1, 3, 3] and worked["spec"]["loss"] == "mse"
    assert [layer["type"] for layer in layers] == ["conv", "flatten", "dense"]
    assert layers[0]["filters"] == 1 and layers[0]["kernel"] == 2 and layers[0]["activation"] == "identity"
    assert worked["initial_params"][0] == {"W": [[F]], "b": [0.0]}
    assert worked["initial_params"][2]["W"] == np.eye(4).tolist()
    assert worked["examples"][0]["name"] == "worked"
    assert worked["examples"][0]["input"] == [X]
    assert worked["examples"][0]["target"] == [36.0, 47.0, 65.0, 78.0]  # O - dL/dO
    assert all(p["examples"] == [] and p["initial_params"] is None
               for name, p in presets.items() if name != "worked")


@pytest.mark.parametrize("seed", [0, 12345])
def test_a_trace_of_the_worked_example_shows_the_notes_numbers_exactly(client, seed):
    session_id = create(client, preset="worked", seed=seed)  # fixed weights, whatever the seed
    answer = trace(client, session_id, EXAMPLE)
    conv, flatten, dense = answer["layers"]
    assert answer["input"] == [X]
    assert conv["params"] == {"W": [[F]], "b": [0.0]}
    assert conv["z"] == conv["a"] == [O]
    assert conv["delta"] == [DL_DO]
    assert conv["grads"]["W"] == [[DL_DF]]
    assert conv["grads"]["b"] == [1.0 + 0.0 + 2.0 - 1.0]
    assert answer["input_grad"] == [DL_DX]
    assert flatten["a"] == [37.0, 47.0, 67.0, 77.0] and flatten["delta"] == [1.0, 0.0, 2.0, -1.0]
    assert dense["z"] == answer["prediction"] == [37.0, 47.0, 67.0, 77.0]  # identity weights pass O on
    assert answer["loss"] == 0.5 * (1 + 0 + 4 + 1)
    assert answer["label"] is None and answer["predicted_class"] is None
    assert answer["target"] == [36.0, 47.0, 65.0, 78.0]
    assert answer["source"] == {"example": "worked", "preset": "worked"}


def test_a_what_if_on_the_filter_moves_o_by_the_input_window(client, app):
    session_id = create(client, preset="worked")
    before = snapshot(app, session_id)
    edit = {"layer": 0, "param": "W", "index": [0, 0, 0, 0], "value": 2.0}  # F[0,0]: 1 -> 2
    answer = trace(client, session_id, {**EXAMPLE, "edits": [edit]})
    # every O[i,j] gains X[i,j] (the top-left cell of its window)
    assert answer["layers"][0]["z"] == [[[38.0, 49.0], [71.0, 82.0]]]
    snapshot(app, session_id).assert_same_as(before)
    assert trace(client, session_id, EXAMPLE)["layers"][0]["z"] == [O]


def test_gradcheck_of_a_filter_weight_on_the_worked_example(client):
    session_id = create(client, preset="worked")
    response = client.post(f"/api/sessions/{session_id}/gradcheck",
                           json={**EXAMPLE, "of": {"layer": 0, "param": "W", "index": [0, 0, 1, 0]}})
    answer = response.json()
    assert answer["analytic"] == DL_DF[1][0]
    assert answer["numeric"] == pytest.approx(DL_DF[1][0], rel=1e-9)
    assert answer["label"] is None and answer["kink"] is None
    response = client.post(f"/api/sessions/{session_id}/gradcheck", json={**EXAMPLE, "of": {"input": [0, 2, 2]}})
    assert response.json()["analytic"] == DL_DX[2][2]


def test_digits_can_still_be_traced_on_the_worked_preset(client):
    session_id = create(client, preset="worked")
    answer = trace(client, session_id, {"input": {"dataset": "mnist", "index": 3}})  # a 0
    assert answer["label"] == 0 and answer["target"] == [1.0, 0.0, 0.0, 0.0]
    assert np.asarray(answer["input"]).shape == (1, 3, 3)


@pytest.mark.parametrize("body, status, words", [
    ({"input": {"example": "worked"}, "label": 2}, 422, ["label", "example"]),
    ({"input": {"example": "other"}}, 422, ["no example", "'other'", "'worked'"]),
    ({"input": {"example": "worked", "extra": 1}}, 422, ["extra"]),
])
def test_bad_example_requests_are_refused(client, body, status, words):
    session_id = create(client, preset="worked")
    response = client.post(f"/api/sessions/{session_id}/trace", json=body)
    assert response.status_code == status
    detail = str(response.json()["detail"])
    for word in words:
        assert word in detail, (word, detail)


def test_a_session_without_examples_refuses_one(client):
    session_id = create(client)  # lenet5
    response = client.post(f"/api/sessions/{session_id}/trace", json=EXAMPLE)
    assert response.status_code == 422
    assert "no example 'worked'" in response.json()["detail"]


def test_a_step_on_the_worked_example_applies_minus_lr_times_the_notes_gradient(client):
    session_id = create(client, preset="worked")
    response = client.post(f"/api/sessions/{session_id}/step",
                           json={"batch_size": 1, "learning_rate": 1e-5, **EXAMPLE})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["trace"]["layers"][0]["z"] == [O] and answer["trace"]["input_grad"] == [DL_DX]
    assert answer["trace"]["label"] is None and answer["trace"]["target"] == [36.0, 47.0, 65.0, 78.0]
    assert answer["batch"]["labels"] == [None] and answer["batch"]["indices"] == [None]
    assert answer["batch_grads"][0]["W"] == [[DL_DF]]
    expected = np.asarray(F) - 1e-5 * np.asarray(DL_DF)
    np.testing.assert_allclose(answer["params_after"][0]["W"][0][0], expected, rtol=1e-15)
    assert answer["params_before"][0]["W"] == [[F]]
    assert answer["loss"] == 3.0 and answer["loss_after"] < answer["loss"]
    # O = [37,47,67,77] and the target [36,47,65,78] both point at the last output
    assert answer["batch"]["predicted"] == [3] and answer["batch_accuracy"] == 1.0
    history = client.get(f"/api/sessions/{session_id}/history").json()
    assert history["loss"] == [3.0] and history["accuracy"] == [1.0]


def test_a_step_mixes_the_example_with_digits(client):
    session_id = create(client, preset="worked")
    answer = client.post(f"/api/sessions/{session_id}/step", json={"batch_size": 4, **EXAMPLE}).json()
    assert answer["batch"]["labels"][0] is None and all(0 <= d <= 3 for d in answer["batch"]["labels"][1:])
    assert answer["batch"]["indices"][0] is None and None not in answer["batch"]["indices"][1:]
    assert answer["loss"] == pytest.approx(np.mean(answer["batch"]["losses"]))
    assert answer["batch"]["losses"][0] == 3.0
