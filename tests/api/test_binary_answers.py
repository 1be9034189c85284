"""?format=safetensors and ?fields= on trace and step: the binary answer is the JSON answer, array
for array (read back with the reference ``safetensors`` package), ``fields`` limits both formats,
and a bad format or field is a 422 that changes nothing. Also the step's ``batch``."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load

from app.datasets import fit_to_input
from engine import train_split

from .conftest import create, engine_testkit, mnist_digit, snapshot

LAYER_ARRAYS = ("z", "a", "delta", "grad_a", "argmax")
ALL_FIELDS = ("z", "a", "delta", "grad_a", "grads", "params", "argmax")
# float64, avgpool, a sigmoid output under mse (so the output layer has a grad_a tensor)
FLOAT64_SPEC = {"input_shape": [1, 12, 12],
                "layers": [{"type": "conv", "filters": 3, "kernel": 3, "padding": 1,
                            "activation": "tanh"},
                           {"type": "avgpool", "size": 2},
                           {"type": "conv", "filters": 2, "kernel": 3, "activation": "relu"},
                           {"type": "maxpool", "size": 2},
                           {"type": "flatten"},
                           {"type": "dense", "units": 10, "activation": "sigmoid"}],
                "loss": "mse", "dtype": "float64", "seed": 3}
NETWORKS = {"lenet5": {"preset": "lenet5", "seed": 0}, "tiny": {"preset": "tiny", "seed": 1},
            "float64": {"spec": FLOAT64_SPEC}}


def _post(client, session_id, kind, body, **query):
    response = client.post(f"/api/sessions/{session_id}/{kind}", json=body, params=query)
    assert response.status_code == 200, response.text
    return response


def _binary(response):
    """(tensors, the metadata JSON) of a safetensors answer."""
    assert response.headers["content-type"] == "application/octet-stream"
    data = response.content
    (header_length,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8:8 + header_length])["__metadata__"]
    return load(data), json.loads(metadata["json"])


def _trace_arrays(trace: dict, prefix: str = "") -> dict:
    """Every array of a JSON trace answer by its tensor name (written out from DESIGN.md, not
    from the server's code): input, input_grad, prediction, layers.{i}.z|a|delta|grad_a|argmax,
    layers.{i}.grads.W|b, layers.{i}.params.W|b, wherever the JSON has a non-null array."""
    arrays = {f"{prefix}{key}": trace[key] for key in ("input", "input_grad", "prediction")}
    for i, layer in enumerate(trace["layers"]):
        for key in LAYER_ARRAYS:
            if layer.get(key) is not None:
                arrays[f"{prefix}layers.{i}.{key}"] = layer[key]
        for group in ("grads", "params"):
            for name, value in layer.get(group, {}).items():
                arrays[f"{prefix}layers.{i}.{group}.{name}"] = value
    return arrays


def _step_arrays(step: dict) -> dict:
    arrays = _trace_arrays(step["trace"], "trace.")
    for group in ("params_after", "batch_grads"):
        for i, layer in enumerate(step.get(group, [])):
            for name, value in layer.items():
                arrays[f"{group}.{i}.{name}"] = value
    return arrays


def _without_arrays(content):
    """The JSON answer with every array key dropped, as the binary answer's metadata holds it."""
    if isinstance(content, dict):
        return {key: _without_arrays(value) for key, value in content.items()
                if not _is_array(key, value)}
    if isinstance(content, list) and any(isinstance(item, dict) for item in content):
        return [_without_arrays(item) for item in content]
    return content


def _is_array(key, value) -> bool:
    return isinstance(value, list) and key in (
        "input", "input_grad", "prediction", "W", "b", *LAYER_ARRAYS)


def _assert_same_arrays(tensors: dict, arrays: dict, dtype: str) -> None:
    assert set(tensors) == set(arrays)
    for name, value in arrays.items():
        tensor = tensors[name]
        expected_dtype = np.int32 if name.endswith(".argmax") else np.dtype(dtype)
        assert tensor.dtype == expected_dtype, name
        expected = np.asarray(value, dtype=expected_dtype)
        assert tensor.shape == expected.shape, name
        np.testing.assert_array_equal(tensor, expected, err_msg=name)


def _dtype(client, session_id) -> str:
    return client.get(f"/api/sessions/{session_id}").json()["spec"]["dtype"]


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_binary_trace_equals_the_json_trace_array_for_array(client, network):
    session_id = create(client, **NETWORKS[network])
    body = {"input": {"dataset": "mnist", "index": 11}}
    answer = _post(client, session_id, "trace", body).json()
    tensors, metadata = _binary(_post(client, session_id, "trace", body, format="safetensors"))
    _assert_same_arrays(tensors, _trace_arrays(answer), _dtype(client, session_id))
    assert metadata == _without_arrays(answer)
    assert tensors["input"].shape == tuple(answer["layers"][0]["input_shape"])


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_binary_step_equals_the_json_step_array_for_array(client, network):
    # two sessions built alike take the same step: one answers JSON, the other safetensors
    as_json, as_binary = (create(client, **NETWORKS[network]) for _ in range(2))
    body = {"batch_size": 6, "learning_rate": 0.1, "optimizer": "momentum"}
    for _ in range(2):  # the second step also carries the optimizer's state over
        answer = _post(client, as_json, "step", body).json()
        tensors, metadata = _binary(_post(client, as_binary, "step", body, format="safetensors"))
    _assert_same_arrays(tensors, _step_arrays(answer), _dtype(client, as_json))
    # params_before repeats trace.layers.{i}.params: in the JSON only, never twice in the file
    assert not any(name.startswith("params_before") for name in tensors)
    for i, layer in enumerate(answer["params_before"]):
        assert layer == answer["trace"]["layers"][i]["params"]
    expected = _without_arrays(answer)
    del expected["params_before"]
    assert metadata == expected
    assert metadata["batch"] == answer["batch"] and metadata["step"] == 2


def test_binary_tensors_are_aligned_for_typed_array_views(client):
    session_id = create(client)
    data = _post(client, session_id, "step", {"batch_size": 2}, format="safetensors").content
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_length])
    item_sizes = {"F32": 4, "F64": 8, "I32": 4}
    for name, entry in header.items():
        if name != "__metadata__":
            assert (8 + header_length + entry["data_offsets"][0]) % item_sizes[entry["dtype"]] == 0


@pytest.mark.parametrize("fields", [(), ("a",), ("z", "delta"), ("grads",), ("params", "argmax"),
                                    ("z", "a", "delta", "grad_a", "argmax"), ALL_FIELDS])
@pytest.mark.parametrize("answer_format", ["json", "safetensors"])
def test_fields_limit_the_per_layer_arrays_in_both_formats(client, fields, answer_format):
    session_id = create(client)
    query = {"fields": ",".join(fields), "format": answer_format}
    trace = _post(client, session_id, "trace", {"input": {"dataset": "mnist", "index": 2}}, **query)
    step = _post(client, session_id, "step", {"batch_size": 3}, **query)
    if answer_format == "json":
        trace, step = trace.json(), step.json()
        for layer in trace["layers"] + step["trace"]["layers"]:
            applicable = set(ALL_FIELDS) - (set() if layer["type"] == "maxpool" else {"argmax"})
            assert set(layer) & set(ALL_FIELDS) == set(fields) & applicable, layer["name"]
        assert ("params_before" in step) == ("params_after" in step) == ("params" in fields)
        assert ("batch_grads" in step) == ("grads" in fields)
        names = set(_trace_arrays(trace)) | set(_step_arrays(step))
    else:
        names = set(_binary(trace)[0]) | set(_binary(step)[0])
    # layers.{i}.{field}[.W|b] and trace.layers.{i}.{field}[.W|b]: exactly the fields asked
    per_layer = {name.split("layers.", 1)[1].split(".")[1] for name in names
                 if name.startswith(("layers.", "trace.layers."))}
    assert per_layer == set(fields)
    assert {"input", "input_grad", "prediction", "trace.input", "trace.prediction"} <= names
    assert ("params_after.0.W" in names) == ("params" in fields)
    assert ("batch_grads.0.W" in names) == ("grads" in fields)
    assert not any(name.startswith("params_before") for name in names)


def test_no_fields_query_sends_everything_and_json_stays_the_default(client):
    session_id = create(client)
    body = {"input": {"dataset": "mnist", "index": 2}}
    default = _post(client, session_id, "trace", body)
    assert default.headers["content-type"] == "application/json"
    everything = _post(client, session_id, "trace", body, format="json",
                       fields=" z, a,delta,grad_a,grads,params,argmax,a ")
    assert default.json() == everything.json()


@pytest.mark.parametrize("kind", ["trace", "step"])
@pytest.mark.parametrize("query, words", [
    ({"format": "xml"}, "'json' or 'safetensors'"),
    ({"format": "SAFETENSORS"}, "'json' or 'safetensors'"),
    ({"fields": "z,weights"}, "unknown field 'weights'"),
    ({"fields": "Z,grad"}, "unknown fields 'Z', 'grad'"),
])
def test_bad_format_or_field_is_422_in_plain_words_and_changes_nothing(client, app, kind, query,
                                                                       words):
    session_id = create(client)
    before = snapshot(app, session_id)
    body = {"input": {"dataset": "mnist", "index": 2}} if kind == "trace" else {"batch_size": 2}
    response = client.post(f"/api/sessions/{session_id}/{kind}", json=body, params=query)
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["query", next(iter(query))] and words in problem["msg"]
    snapshot(app, session_id).assert_same_as(before)


def test_openapi_documents_format_fields_and_the_binary_answer(client):
    document = client.get("/openapi.json").json()
    for kind in ("trace", "step"):
        operation = document["paths"][f"/api/sessions/{{session_id}}/{kind}"]["post"]
        parameters = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
        assert parameters["format"]["schema"]["enum"] == ["json", "safetensors"]
        assert all(field in parameters["fields"]["description"] for field in ALL_FIELDS)
        # the documented pattern admits what the server accepts and nothing it refuses
        pattern = re.compile(parameters["fields"]["schema"]["pattern"])
        for accepted in ("", "a", "z,a,delta", " grads , params ", ",".join(ALL_FIELDS), "a,,z"):
            assert pattern.match(accepted), accepted
        for refused in ("za", "weights", "grad", "a;z", "Z"):
            assert not pattern.match(refused), refused
        content = operation["responses"]["200"]["content"]
        assert {"application/json", "application/octet-stream"} <= set(content)
    layer = document["components"]["schemas"]["LayerOut"]
    assert not set(ALL_FIELDS) & set(layer.get("required", []))
    step = document["components"]["schemas"]["StepOut"]
    assert "batch" in step["required"] and "params_before" not in step["required"]


# --- the step's batch -------------------------------------------------------------------------

def test_batch_lists_the_drawn_samples_from_the_cursor_on(client):
    session_id = create(client)
    first = _post(client, session_id, "step", {"batch_size": 5}).json()["batch"]
    second = _post(client, session_id, "step", {"batch_size": 3}).json()["batch"]
    assert first["indices"] == [0, 1, 2, 3, 4] and second["indices"] == [5, 6, 7]
    labels = train_split()[1]
    assert second["labels"] == labels[5:8].tolist()
    assert len(second["losses"]) == len(second["predicted"]) == 3


def test_batch_of_tiny_skips_nothing_and_predicts_zero_or_one(client):
    session_id = create(client, preset="tiny", seed=0)
    batch = _post(client, session_id, "step", {"batch_size": 8}).json()["batch"]
    assert batch["indices"] == list(range(8))
    assert set(batch["predicted"]) <= {0, 1}


def test_batch_losses_and_predictions_match_pytorch_on_the_weights_before(client):
    kit = engine_testkit()
    session_id = create(client)
    for _ in range(2):
        answer = _post(client, session_id, "step", {"batch_size": 16, "learning_rate": 0.1},
                       fields="params").json()
    batch = answer["batch"]
    images, labels = train_split()
    x = fit_to_input(images[batch["indices"]], (1, 28, 28)).astype(np.float64)
    spec = client.get(f"/api/sessions/{session_id}").json()["spec"]
    reference = kit.torch_trace(spec, answer["params_before"], x, labels[batch["indices"]])
    logits = reference.layers[-1].z.detach()
    losses = F.cross_entropy(logits, torch.as_tensor(labels[batch["indices"]]), reduction="none")
    np.testing.assert_allclose(batch["losses"], losses.numpy(), rtol=1e-4, atol=1e-6)
    assert batch["predicted"] == logits.argmax(dim=1).tolist()
    assert np.mean(batch["losses"]) == pytest.approx(answer["loss"], rel=1e-6)
    assert batch["labels"] == labels[batch["indices"]].tolist()


def test_a_given_input_is_sample_zero_of_the_batch_with_a_null_index(client):
    session_id = create(client)
    answer = _post(client, session_id, "step",
                   {"batch_size": 4, "input": {"pixels": mnist_digit(9)}, "label": 2}).json()
    batch = answer["batch"]
    assert batch["indices"] == [None, 0, 1, 2] == answer["batch_indices"]
    assert batch["labels"][0] == 2
    assert batch["losses"][0] == pytest.approx(answer["trace"]["loss"], rel=1e-5)
    assert batch["predicted"][0] == answer["trace"]["predicted_class"]
