"""POST /api/specs/check: the layer builder's validation, the engine's shapes and parameter
counts without building a session, and the index of the layer a SpecError names."""

from __future__ import annotations

import pytest

from engine import Network
from app.presets import PRESETS


@pytest.mark.parametrize("preset", ["lenet5", "tiny", "mlp"])
def test_check_answers_the_engines_shapes_and_parameter_counts(client, preset):
    spec = PRESETS[preset].spec_with_seed(3)
    answer = client.post("/api/specs/check", json={"spec": spec})
    assert answer.status_code == 200
    body = answer.json()
    network = Network.from_spec(spec)
    assert body["spec"] == network.spec
    assert [layer["name"] for layer in body["layers"]] == network.names
    assert [(tuple(layer["input_shape"]), tuple(layer["output_shape"]))
            for layer in body["layers"]] == network.layer_shapes
    assert [layer["parameters"] for layer in body["layers"]] == [
        sum(p.size for p in params.values()) for params in network.params]
    assert body["parameters"] == network.num_parameters
    assert body["output_size"] == network.output_size


def test_check_fills_in_defaults_and_keeps_the_conv_options(client):
    spec = {"input_shape": [1, 8, 8], "layers": [
        {"type": "conv", "filters": 2, "kernel": 3, "padding": 1, "padding_mode": "circular",
         "operation": "convolution"},
        {"type": "maxpool", "size": 2}, {"type": "flatten"},
        {"type": "dense", "units": 3, "activation": "softmax"}], "loss": "cross_entropy"}
    body = client.post("/api/specs/check", json={"spec": spec}).json()
    conv = body["spec"]["layers"][0]
    assert conv["padding_mode"] == "circular" and conv["operation"] == "convolution"
    assert conv["stride"] == [1, 1] and conv["activation"] == "identity"
    assert body["spec"]["layers"][1]["stride"] == [2, 2]
    assert [layer["output_shape"] for layer in body["layers"]] == [[2, 8, 8], [2, 4, 4], [32], [3]]
    assert [layer["parameters"] for layer in body["layers"]] == [20, 0, 0, 99]


@pytest.mark.parametrize(("change", "layer", "words"), [
    (lambda s: s["layers"][2].update(kernel=20), 2, "kernel height 20 is larger"),
    (lambda s: s["layers"][0].update(filters=0), 0, "'filters' must be between"),
    (lambda s: s["layers"][0].update(activation="swish"), 0, "unknown activation"),
    (lambda s: s["layers"].pop(4), 4, "needs a flat input"),
    (lambda s: s["layers"][5].update(activation="softmax"), 5, "softmax is only allowed on the last"),
    (lambda s: s["layers"][7].update(activation="relu"), 7, "needs a dense output layer"),
    (lambda s: s.update(loss="hinge"), None, "unknown loss"),
])
def test_a_bad_spec_is_a_422_naming_the_layer(client, change, layer, words):
    spec = PRESETS["lenet5"].spec_with_seed(0)
    change(spec)
    answer = client.post("/api/specs/check", json={"spec": spec})
    assert answer.status_code == 422
    body = answer.json()
    assert body["layer"] == layer and words in body["detail"]
    if layer is not None:
        assert f"layer {layer} " in body["detail"]


def test_a_spec_over_a_size_cap_is_a_422(client):
    spec = {"input_shape": [1, 28, 28], "layers": [
        {"type": "conv", "filters": 512, "kernel": 3, "padding": 1}, {"type": "flatten"},
        {"type": "dense", "units": 10, "activation": "softmax"}], "loss": "cross_entropy"}
    answer = client.post("/api/specs/check", json={"spec": spec})
    assert answer.status_code == 422 and answer.json()["detail"]


@pytest.mark.parametrize("body", [{}, {"spec": []}, {"spec": {"layers": []}, "extra": 1}, None])
def test_a_malformed_check_request_is_a_422(client, body):
    answer = client.post("/api/specs/check", json=body)
    assert answer.status_code == 422 and answer.json()["detail"]


def test_check_creates_no_session(client, app):
    before = list(app.state.store.ids())
    client.post("/api/specs/check", json={"spec": PRESETS["tiny"].spec_with_seed(0)})
    assert list(app.state.store.ids()) == before
