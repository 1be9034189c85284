"""What-if traces (a dataset sample traced against another label, weight edits) and
POST /api/sessions/{id}/gradcheck: answers equal PyTorch float64 autograd, bad requests are a 422
naming the problem, and the session is exactly as it was afterwards (weights bit-identical, step,
cursor, history and optimizer unchanged)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.datasets import fit_to_input
from engine import train_split

from .conftest import create, engine_testkit, mnist_digit, snapshot

close, torch_trace = engine_testkit().close, engine_testkit().torch_trace  # the engine tests' PyTorch reference

# float64, so the answers can be held to PyTorch at 1e-7; every conv option in play
SPEC64 = {
    "input_shape": [1, 12, 12],
    "layers": [
        {"type": "conv", "filters": 3, "kernel": 3, "padding": 1, "padding_mode": "circular",
         "operation": "convolution", "activation": "relu"},
        {"type": "maxpool", "size": 2},
        {"type": "conv", "filters": 4, "kernel": 2, "padding": 2, "activation": "tanh"},
        {"type": "flatten"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ],
    "loss": "cross_entropy",
    "dtype": "float64",
    "seed": 3,
}


def post(client, session_id, what, body):
    return client.post(f"/api/sessions/{session_id}/{what}", json=body)


def session_params(app, session_id):
    session = app.state.store.get(session_id)
    return [{key: value.copy() for key, value in layer.items()} for layer in session.network.params]


def weights_bytes(app, session_id):
    session = app.state.store.get(session_id)
    return {key: value.tobytes() for key, value in session.network.state_dict().items()}


def sample_x(index, input_shape):
    images = train_split()[0]
    return fit_to_input(images[index:index + 1], tuple(input_shape)).astype(np.float64)


def trained_session(client, **body):
    """A session that has taken a step, so optimizer state and history exist to be kept."""
    session_id = create(client, **body)
    assert post(client, session_id, "step", {"batch_size": 4}).status_code == 200
    return session_id


def test_what_if_label_and_edits_trace_equals_pytorch_and_changes_nothing(client, app):
    session_id = trained_session(client, spec=SPEC64)
    spec = client.get(f"/api/sessions/{session_id}").json()["spec"]
    index = 11
    digit = int(train_split()[1][index])
    other = (digit + 3) % 10
    edits = [{"layer": 0, "param": "W", "index": [1, 0, 0, 2], "value": 2.5},
             {"layer": 2, "param": "b", "index": [3], "value": -0.75},
             {"layer": 4, "param": "W", "index": [other, 17], "value": 1.5}]
    before, raw = snapshot(app, session_id), weights_bytes(app, session_id)
    params = session_params(app, session_id)
    answer = post(client, session_id, "trace", {"input": {"dataset": "mnist", "index": index},
                                                "label": other, "edits": edits})
    assert answer.status_code == 200, answer.text
    answer = answer.json()
    snapshot(app, session_id).assert_same_as(before)
    assert weights_bytes(app, session_id) == raw

    assert answer["label"] == answer["target"] == other
    assert answer["source"] == {"dataset": "mnist", "split": "train", "index": index, "dataset_label": digit}
    assert answer["edits"] == edits
    params[0]["W"][1, 0, 0, 2] = 2.5
    params[2]["b"][3] = -0.75
    params[4]["W"][other, 17] = 1.5
    reference = torch_trace(spec, params, sample_x(index, spec["input_shape"]), np.array([other]))
    close(answer["loss"], reference.loss, 1e-7, "loss")
    close(np.asarray(answer["input_grad"])[None], reference.input_grad, 1e-7, "input_grad")
    for layer, theirs in zip(answer["layers"], reference.layers):
        where = layer["name"]
        close(np.asarray(layer["z"])[None], theirs.z.detach().numpy(), 1e-7, f"{where} z")
        close(np.asarray(layer["delta"])[None], theirs.z.grad.numpy(), 1e-7, f"{where} delta")
        for key, tensor in theirs.params.items():
            np.testing.assert_array_equal(layer["params"][key], params[layer["index"]][key])
            close(np.asarray(layer["grads"][key]), tensor.grad.numpy(), 1e-7, f"{where} d{key}")

    # the plain trace afterwards is the session's own network again
    plain = post(client, session_id, "trace", {"input": {"dataset": "mnist", "index": index}}).json()
    assert plain["label"] == digit and "dataset_label" not in plain["source"] and "edits" not in plain
    assert plain["loss"] != answer["loss"]


def test_the_same_label_given_again_is_no_what_if(client):
    session_id = create(client)
    digit = int(train_split()[1][7])
    answer = post(client, session_id, "trace", {"input": {"dataset": "mnist", "index": 7}, "label": digit}).json()
    plain = post(client, session_id, "trace", {"input": {"dataset": "mnist", "index": 7}}).json()
    assert answer["source"] == plain["source"] and answer["loss"] == plain["loss"]


def test_edit_values_are_rounded_to_the_networks_dtype(client, app):
    session_id = create(client)  # lenet5, float32
    edit = {"layer": 0, "param": "W", "index": [2, 0, 1, 3], "value": 0.1}
    answer = post(client, session_id, "trace", {"input": {"dataset": "mnist", "index": 3}, "edits": [edit]}).json()
    # JSON writes float32 values by their shortest float32 form, the edit's echo like the arrays
    shown = answer["layers"][0]["params"]["W"][2][0][1][3]
    assert answer["edits"] == [dict(edit, value=shown)]
    assert np.float32(shown) == np.float32(0.1)
    assert app.state.store.get(session_id).network.params[0]["W"][2, 0, 1, 3] != np.float32(0.1)


GRADCHECK_TARGETS = [
    {"layer": 0, "param": "W", "index": [2, 0, 1, 1]},
    {"layer": 0, "param": "b", "index": [1]},
    {"layer": 2, "param": "W", "index": [3, 1, 1, 0]},
    {"layer": 4, "param": "W", "index": [4, 30]},
    {"layer": 4, "param": "b", "index": [7]},
    {"input": [0, 5, 6]},
]


@pytest.mark.parametrize("number", range(len(GRADCHECK_TARGETS)))
def test_gradcheck_equals_pytorch_and_changes_nothing(client, app, number):
    of = GRADCHECK_TARGETS[number]
    session_id = trained_session(client, spec=SPEC64)
    spec = client.get(f"/api/sessions/{session_id}").json()["spec"]
    edits = [{"layer": 2, "param": "W", "index": [0, 0, 0, 0], "value": 0.9}]
    before, raw = snapshot(app, session_id), weights_bytes(app, session_id)
    params = session_params(app, session_id)
    response = post(client, session_id, "gradcheck", {"input": {"dataset": "mnist", "index": 20},
                                                      "label": 4, "edits": edits, "of": of, "epsilon": 1e-6})
    assert response.status_code == 200, response.text
    answer = response.json()
    snapshot(app, session_id).assert_same_as(before)
    assert weights_bytes(app, session_id) == raw

    params[2]["W"][0, 0, 0, 0] = 0.9
    x, y = sample_x(20, spec["input_shape"]), np.array([4])
    reference = torch_trace(spec, params, x, y)
    if "input" in of:
        expected = reference.input_grad[(0, *of["input"])]
    else:
        expected = reference.layers[of["layer"]].params[of["param"]].grad.numpy()[tuple(of["index"])]
    close(answer["analytic"], expected, 1e-7, "analytic")
    np.testing.assert_allclose(answer["numeric"], expected, rtol=1e-5, atol=1e-9)
    assert answer["of"] == of and answer["epsilon"] == 1e-6 and answer["dtype"] == "float64"
    assert answer["label"] == 4 and answer["abs_error"] == pytest.approx(abs(answer["analytic"] - answer["numeric"]))
    assert answer["kink"] is None and answer["kinks"] == []
    for sign, key in ((1, "loss_plus"), (-1, "loss_minus")):
        moved_params = [{k: v.copy() for k, v in layer.items()} for layer in params]
        moved_x = x.copy()
        if "input" in of:
            moved_x[(0, *of["input"])] += sign * 1e-6
        else:
            moved_params[of["layer"]][of["param"]][tuple(of["index"])] += sign * 1e-6
        close(answer[key], torch_trace(spec, moved_params, moved_x, y).loss, 1e-12, key)


def test_gradcheck_on_lenet5_float32_agrees_with_pytorch(client, app):
    session_id = create(client)
    spec = client.get(f"/api/sessions/{session_id}").json()["spec"]
    raw = weights_bytes(app, session_id)
    of = {"layer": 2, "param": "W", "index": [5, 3, 2, 2]}
    answer = post(client, session_id, "gradcheck", {"input": {"dataset": "mnist", "index": 0}, "of": of}).json()
    assert weights_bytes(app, session_id) == raw
    params = session_params(app, session_id)
    expected = torch_trace(spec, params, sample_x(0, spec["input_shape"]),
                           np.array([int(train_split()[1][0])])).layers[2].params["W"].grad.numpy()[5, 3, 2, 2]
    assert answer["dtype"] == "float32" and answer["epsilon"] == 1e-5
    np.testing.assert_allclose(answer["numeric"], expected, rtol=1e-5, atol=1e-9)  # float64 on copies
    np.testing.assert_allclose(answer["analytic"], expected, rtol=1e-3, atol=1e-6)  # the float32 trace


def test_gradcheck_explains_a_relu_kink(client, app):
    """A conv relu unit put exactly on its kink by a what-if bias: the check names it."""
    spec = {"input_shape": [1, 4, 4], "dtype": "float64", "loss": "mse", "layers": [
        {"type": "conv", "filters": 1, "kernel": 2, "stride": 2, "activation": "relu"},
        {"type": "flatten"}, {"type": "dense", "units": 10, "activation": "identity"}]}
    session_id = create(client, spec=spec)
    edits = [{"layer": 0, "param": "W", "index": [0, 0, r, c], "value": 0.0} for r in (0, 1) for c in (0, 1)]
    edits.append({"layer": 0, "param": "b", "index": [0], "value": 0.0})  # z = 0 everywhere
    answer = post(client, session_id, "gradcheck", {"input": {"pixels": mnist_digit(1)}, "label": 2,
                                                    "edits": edits, "of": {"layer": 0, "param": "b",
                                                                           "index": [0]}}).json()
    assert answer["analytic"] == 0.0 and answer["numeric"] != 0.0
    assert answer["kink"]["name"] == "conv1" and answer["kink"]["kind"] == "relu"
    assert answer["kink"]["count"] == 4 and "conv1" in answer["kink"]["explanation"]


BAD_BODIES = {
    "of a layer without parameters": ({"of": {"layer": 1, "param": "W", "index": [0]}}, ["of", "maxpool1"]),
    "of a layer out of range": ({"of": {"layer": 8, "param": "b", "index": [0]}}, ["of", "layer"]),
    "of an index out of range": ({"of": {"layer": 5, "param": "W", "index": [120, 0]}}, ["of", "out of range"]),
    "of an index of the wrong length": ({"of": {"layer": 5, "param": "b", "index": [0, 0]}}, ["of", "index"]),
    "of an input cell out of range": ({"of": {"input": [0, 28, 0]}}, ["of", "out of range"]),
    "of a negative input cell": ({"of": {"input": [0, -1, 0]}}, ["of", "input"]),
    "of with an unknown key": ({"of": {"layer": 0, "param": "W", "index": [0, 0, 0, 0], "extra": 1}}, ["of"]),
    "of an unknown param": ({"of": {"layer": 0, "param": "gamma", "index": [0]}}, ["of", "param"]),
    "no of": ({}, ["of"]),
    "epsilon too small": ({"epsilon": 1e-9}, ["epsilon"]),
    "epsilon too large": ({"epsilon": 0.5}, ["epsilon"]),
    "edit of a layer without parameters": ({"edits": [{"layer": 4, "param": "W", "index": [0], "value": 1.0}]},
                                           ["edits[0]", "flatten1"]),
    "edit index out of range": ({"edits": [{"layer": 0, "param": "W", "index": [6, 0, 0, 0], "value": 1.0}]},
                                ["edits[0]", "out of range"]),
    "edit with a negative index": ({"edits": [{"layer": 0, "param": "b", "index": [-1], "value": 1.0}]},
                                   ["edits", "index"]),
    "edit with a NaN value": ({"edits": [{"layer": 0, "param": "b", "index": [0], "value": float("nan")}]},
                              ["edits", "value", "finite"]),
    "edit with an infinite value": ({"edits": [{"layer": 0, "param": "b", "index": [0], "value": float("inf")}]},
                                    ["edits", "value", "finite"]),
    "edit with a text value": ({"edits": [{"layer": 0, "param": "b", "index": [0], "value": "1"}]},
                               ["edits", "value"]),
    "edit missing its value": ({"edits": [{"layer": 0, "param": "b", "index": [0]}]}, ["edits", "value"]),
    "edit value beyond float32": ({"edits": [{"layer": 0, "param": "b", "index": [0], "value": 1e39}]},
                                  ["edits[0]", "float32"]),
    "edits that overflow the pass": ({"edits": [{"layer": 0, "param": "W", "index": [f, 0, 2, 2], "value": 3e38}
                                                for f in range(6)]}, ["not finite", "smaller"]),
    "too many edits": ({"edits": [{"layer": 0, "param": "b", "index": [0], "value": 1.0}] * 1025},
                       ["edits", "1024"]),
    "label for a pixel input left out": ({"input": {"pixels": mnist_digit()}}, ["label"]),
    "label out of range": ({"label": 10}, ["label"]),
}

GOOD_OF = {"of": {"layer": 0, "param": "b", "index": [0]}}


# every bad body against gradcheck; those not about `of` or epsilon against trace too
BAD_CASES = [(what, name) for name in sorted(BAD_BODIES) for what in ("trace", "gradcheck")
             if what == "gradcheck" or (BAD_BODIES[name][0] and not set(BAD_BODIES[name][0]) & {"of", "epsilon"})]


@pytest.mark.parametrize("what, name", BAD_CASES)
def test_bad_requests_are_422_naming_the_problem_and_change_nothing(client, app, what, name):
    changes, words = BAD_BODIES[name]
    session_id = trained_session(client)
    before, raw = snapshot(app, session_id), weights_bytes(app, session_id)
    body = {"input": {"dataset": "mnist", "index": 5}, **(GOOD_OF if what == "gradcheck" else {}), **changes}
    if name == "no of":
        del body["of"]
    response = client.post(f"/api/sessions/{session_id}/{what}", content=json.dumps(body),
                           headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    detail = json.dumps(response.json()["detail"])
    for word in words:
        assert word in detail, (word, detail)
    snapshot(app, session_id).assert_same_as(before)
    assert weights_bytes(app, session_id) == raw


def test_gradcheck_respects_the_work_cap(client, app):
    session_id = create(client)
    app.state.settings.max_request_macs = 1_000_000  # below even one LeNet-5 trace
    response = post(client, session_id, "gradcheck", {"input": {"dataset": "mnist", "index": 0}, **GOOD_OF})
    assert response.status_code == 422
    assert response.json()["cap"] == "max_request_macs"
    detail = response.json()["detail"]
    assert "multiply-adds" in detail and "2 only passed forward" in detail  # a trace and two passes


def test_gradcheck_of_an_unknown_session_is_404(client):
    response = post(client, "A" * 22, "gradcheck", {"input": {"dataset": "mnist", "index": 0}, **GOOD_OF})
    assert response.status_code == 404


def test_step_after_what_ifs_starts_from_the_sessions_own_weights(client, app):
    session_id = create(client)
    weights = app.state.store.get(session_id).network.state_dict()
    edits = [{"layer": 7, "param": "b", "index": [1], "value": 5.0}]
    post(client, session_id, "trace", {"input": {"dataset": "mnist", "index": 1}, "edits": edits})
    post(client, session_id, "gradcheck", {"input": {"dataset": "mnist", "index": 1}, "edits": edits, **GOOD_OF})
    step = post(client, session_id, "step", {"batch_size": 2}).json()
    for i, layer in enumerate(step["params_before"]):
        for key, value in layer.items():
            np.testing.assert_array_equal(np.asarray(value, dtype=np.float32), weights[f"{i}.{key}"])


def test_openapi_documents_gradcheck_and_edits(client):
    document = client.get("/openapi.json").json()
    assert "post" in document["paths"]["/api/sessions/{session_id}/gradcheck"]
    schemas = document["components"]["schemas"]
    assert {"GradcheckRequest", "GradcheckOut", "WeightEdit"} <= set(schemas)
    assert "edits" in schemas["TraceRequest"]["properties"]
    assert {"analytic", "numeric", "abs_error", "rel_error", "epsilon", "loss_plus", "loss_minus",
            "kink"} <= set(schemas["GradcheckOut"]["properties"])


def test_a_step_can_apply_the_what_if_label(client, app):
    """After "what if this digit were another?", a real step can train on it with that label."""
    session_id = create(client)
    digit = int(train_split()[1][7])
    other = (digit + 1) % 10
    answer = post(client, session_id, "step", {"batch_size": 1, "input": {"dataset": "mnist", "index": 7},
                                               "label": other}).json()
    assert answer["trace"]["label"] == other and answer["trace"]["source"]["dataset_label"] == digit
    what_if = post(client, session_id, "trace", {"input": {"dataset": "mnist", "index": 7}, "label": other})
    assert what_if.json()["loss"] < answer["loss"]  # the step moved the net towards the new label


def test_a_what_if_trace_comes_as_safetensors_too(client, tmp_path):
    from safetensors import safe_open

    session_id = create(client)
    edit = {"layer": 0, "param": "W", "index": [1, 0, 2, 2], "value": 0.5}
    body = {"input": {"dataset": "mnist", "index": 2}, "edits": [edit]}
    as_json = post(client, session_id, "trace", body).json()
    response = client.post(f"/api/sessions/{session_id}/trace", json=body, params={"format": "safetensors"})
    assert response.status_code == 200, response.text
    path = tmp_path / "trace.safetensors"
    path.write_bytes(response.content)
    with safe_open(str(path), framework="numpy") as answer:
        meta = json.loads(answer.metadata()["json"])
        assert meta["edits"] == as_json["edits"] == [edit]
        assert answer.get_tensor("layers.0.params.W")[1, 0, 2, 2] == np.float32(0.5)
        np.testing.assert_array_equal(answer.get_tensor("layers.0.grads.W"),
                                      np.asarray(as_json["layers"][0]["grads"]["W"], dtype=np.float32))


def test_a_what_if_trace_does_not_become_the_sessions_last_input(app, client):
    session_id = create(client, preset="lenet5")
    assert post(client, session_id, "trace", {"input": {"dataset": "mnist", "index": 3}}).status_code == 200
    remembered = app.state.store.get(session_id).last_input
    assert remembered.source["index"] == 3
    label = (int(train_split()[1][5]) + 1) % 10
    assert post(client, session_id, "trace",
                {"input": {"dataset": "mnist", "index": 5}, "label": label}).status_code == 200
    one_edit = {"edits": [{"layer": 0, "param": "W", "index": [0, 0, 1, 1], "value": 0.5}]}
    assert post(client, session_id, "trace", {"input": {"dataset": "mnist", "index": 7}, **one_edit}
                ).status_code == 200
    assert app.state.store.get(session_id).last_input is remembered  # what the export runs on
