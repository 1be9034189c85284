"""POST /api/sessions/{id}/trace: the answer's fields, its agreement with the engine, inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.datasets import fit_to_input
from engine import Network, train_split

from .conftest import create, mnist_digit, snapshot


def _trace(client, session_id, body):
    return client.post(f"/api/sessions/{session_id}/trace", json=body)


def test_trace_has_every_design_field_for_one_sample(client):
    session_id = create(client)
    trace = _trace(client, session_id, {"input": {"dataset": "mnist", "index": 7}}).json()
    assert {"loss", "label", "prediction", "input", "input_grad", "layers", "target",
            "predicted_class", "source"} <= set(trace)
    assert np.asarray(trace["input"]).shape == (1, 28, 28)
    assert np.asarray(trace["input_grad"]).shape == (1, 28, 28)
    assert len(trace["prediction"]) == 10 and abs(sum(trace["prediction"]) - 1) < 1e-5
    assert trace["predicted_class"] == int(np.argmax(trace["prediction"]))
    assert trace["label"] == trace["target"] == int(train_split()[1][7])
    assert trace["source"] == {"dataset": "mnist", "split": "train", "index": 7}

    names = [layer["name"] for layer in trace["layers"]]
    assert names == ["conv1", "maxpool1", "conv2", "maxpool2", "flatten1", "dense1", "dense2",
                     "dense3"]
    for layer in trace["layers"]:
        for key in ("index", "type", "spec", "input_shape", "output_shape", "z", "a", "delta",
                    "grad_a", "grads", "params"):
            assert key in layer, (layer["name"], key)
        assert np.asarray(layer["a"]).shape == tuple(layer["output_shape"])
        assert np.asarray(layer["delta"]).shape == tuple(layer["output_shape"])
        assert ("argmax" in layer) == (layer["type"] == "maxpool")
        if layer["type"] in ("conv", "dense"):
            assert set(layer["grads"]) == set(layer["params"]) == {"W", "b"}
            assert np.asarray(layer["grads"]["W"]).shape == np.asarray(layer["params"]["W"]).shape
        else:
            assert layer["grads"] == layer["params"] == {}
    conv1 = trace["layers"][0]
    assert conv1["spec"]["kernel"] == [5, 5] and conv1["spec"]["padding"] == [2, 2]
    assert np.asarray(conv1["z"]).shape == (6, 28, 28)
    assert np.asarray(trace["layers"][1]["argmax"]).shape == (6, 14, 14)
    assert trace["layers"][-1]["grad_a"] is None  # softmax + cross-entropy: delta formed directly
    assert np.asarray(trace["layers"][-2]["grad_a"]).shape == (84,)


def test_trace_gradients_equal_the_engines_own_trace_of_the_same_sample(client, app):
    session_id = create(client, preset="lenet5", seed=5)
    answer = _trace(client, session_id, {"input": {"dataset": "mnist", "index": 123}}).json()

    images, labels = train_split()
    network = Network.from_spec(app.state.store.get(session_id).spec)
    reference = network.trace(images[123:124], labels[123:124])

    def same(from_json, engine_array):
        np.testing.assert_array_equal(np.asarray(from_json, dtype=engine_array.dtype),
                                      engine_array)

    assert answer["loss"] == pytest.approx(reference.loss, rel=1e-6)
    same(answer["input_grad"], reference.input_grad[0])
    for layer, record in zip(answer["layers"], reference.layers):
        for key in ("z", "a", "delta"):
            same(layer[key], getattr(record, key)[0])
        for key, value in record.grads.items():
            same(layer["grads"][key], value)
            same(layer["params"][key], record.params[key])
        if record.argmax is not None:
            same(layer["argmax"], record.argmax[0])


def test_trace_of_client_pixels_uses_the_given_label(client):
    session_id = create(client)
    pixels = mnist_digit(3)
    trace = _trace(client, session_id, {"input": {"pixels": pixels}, "label": 4}).json()
    assert trace["label"] == 4 and trace["source"] == {"pixels": True}
    np.testing.assert_array_equal(np.asarray(trace["input"], np.float32)[0],
                                  np.asarray(pixels, np.float32))


def test_trace_of_test_split_sample(client):
    session_id = create(client)
    trace = _trace(client, session_id, {"input": {"dataset": "mnist", "index": 999,
                                                  "split": "test"}}).json()
    assert trace["source"]["split"] == "test"


def test_tiny_net_sees_the_digit_area_averaged_to_6x6_with_a_binary_target(client):
    session_id = create(client, preset="tiny", positive_class=3)
    images, labels = train_split()
    index = int(np.flatnonzero(labels == 3)[0])
    trace = _trace(client, session_id, {"input": {"dataset": "mnist", "index": index}}).json()
    expected = fit_to_input(images[index:index + 1], (1, 6, 6))[0]
    np.testing.assert_allclose(np.asarray(trace["input"]), expected, rtol=1e-6)
    assert np.asarray(trace["input"]).mean() == pytest.approx(float(images[index].mean()), rel=1e-5)
    assert trace["label"] == 3 and trace["target"] == [1.0]
    other = _trace(client, session_id, {"input": {"pixels": mnist_digit(0)}, "label": 5}).json()
    assert other["target"] == [0.0] and len(other["prediction"]) == 1


def test_trace_changes_nothing_in_the_session(client, app):
    session_id = create(client)
    before = snapshot(app, session_id)
    _trace(client, session_id, {"input": {"dataset": "mnist", "index": 1}})
    snapshot(app, session_id).assert_same_as(before)


def test_label_beyond_a_small_softmax_is_refused(client, app):
    spec = {"input_shape": [1, 28, 28],
            "layers": [{"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"}],
            "loss": "cross_entropy"}
    session_id = create(client, spec=spec)
    labels = train_split()[1]
    big = int(np.flatnonzero(labels >= 3)[0])
    response = _trace(client, session_id, {"input": {"dataset": "mnist", "index": big}})
    assert response.status_code == 422 and "below 3" in response.json()["detail"]
    response = _trace(client, session_id, {"input": {"pixels": mnist_digit()}, "label": 5})
    assert response.status_code == 422
    small = int(np.flatnonzero(labels < 3)[0])
    assert _trace(client, session_id, {"input": {"dataset": "mnist", "index": small}}).status_code == 200


def _with_pixel(value):
    pixels = mnist_digit()
    pixels[3][4] = value
    return pixels


BAD_TRACE_BODIES = {
    "index out of range": {"input": {"dataset": "mnist", "index": 9000}},
    "test index out of range": {"input": {"dataset": "mnist", "index": 1000, "split": "test"}},
    "negative index": {"input": {"dataset": "mnist", "index": -1}},
    "index as string": {"input": {"dataset": "mnist", "index": "7"}},
    "index as float": {"input": {"dataset": "mnist", "index": 7.5}},
    "unknown dataset": {"input": {"dataset": "cifar", "index": 7}},
    "unknown split": {"input": {"dataset": "mnist", "index": 7, "split": "dev"}},
    "no input": {},
    "input not an object": {"input": [1, 2]},
    "pixels without label": {"input": {"pixels": mnist_digit()}},
    "pixels 27 rows": {"input": {"pixels": mnist_digit()[:27]}, "label": 1},
    "pixels short row": {"input": {"pixels": mnist_digit()[:27] + [[0.0] * 27]}, "label": 1},
    "pixels flat": {"input": {"pixels": [0.0] * 784}, "label": 1},
    "pixels 3-D": {"input": {"pixels": [mnist_digit()]}, "label": 1},
    "pixel NaN": {"input": {"pixels": _with_pixel(float("nan"))}, "label": 1},
    "pixel infinity": {"input": {"pixels": _with_pixel(float("inf"))}, "label": 1},
    "pixel above 1": {"input": {"pixels": _with_pixel(1.5)}, "label": 1},
    "pixel negative": {"input": {"pixels": _with_pixel(-0.1)}, "label": 1},
    "pixel as string": {"input": {"pixels": _with_pixel("0.5")}, "label": 1},
    "pixel null": {"input": {"pixels": _with_pixel(None)}, "label": 1},
    "label 10": {"input": {"pixels": mnist_digit()}, "label": 10},
    "label negative": {"input": {"pixels": mnist_digit()}, "label": -1},
    "label as string": {"input": {"pixels": mnist_digit()}, "label": "3"},
    "unknown key": {"input": {"dataset": "mnist", "index": 7}, "verbose": True},
}


@pytest.mark.parametrize("name", sorted(BAD_TRACE_BODIES))
def test_bad_trace_input_is_422_and_leaves_the_session_unchanged(client, app, name):
    session_id = create(client)
    client.post(f"/api/sessions/{session_id}/step", json={"batch_size": 4})
    before = snapshot(app, session_id)
    body = json.dumps(BAD_TRACE_BODIES[name])  # allow_nan: NaN and Infinity literals on the wire
    response = client.post(f"/api/sessions/{session_id}/trace", content=body,
                           headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    snapshot(app, session_id).assert_same_as(before)


def test_pixel_errors_say_what_is_wrong(client):
    session_id = create(client)
    for body, fragment in [
        (BAD_TRACE_BODIES["pixels 27 rows"], "28x28"),
        (BAD_TRACE_BODIES["pixel NaN"], "finite"),
        (BAD_TRACE_BODIES["pixel above 1"], "[0, 1]"),
        (BAD_TRACE_BODIES["pixels without label"], "label"),
        (BAD_TRACE_BODIES["index out of range"], "0..8999"),
    ]:
        response = client.post(f"/api/sessions/{session_id}/trace", content=json.dumps(body),
                               headers={"content-type": "application/json"})
        assert fragment in json.dumps(response.json()["detail"]), (body, response.text)


def test_integer_pixels_are_accepted(client):
    session_id = create(client)
    pixels = [[0] * 28 for _ in range(28)]
    pixels[14][14] = 1
    response = _trace(client, session_id, {"input": {"pixels": pixels}, "label": 1})
    assert response.status_code == 200
