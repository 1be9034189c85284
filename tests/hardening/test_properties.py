"""Targeted property tests: generated pixels, specs, training bodies and damaged uploads never
produce a 500; every refusal is a 4xx with a JSON detail, and every acceptance a usable answer."""

import io
import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.main import create_app
from app.settings import Settings

PROPERTY = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("cnnviz-properties")
    with TestClient(create_app(Settings(data_dir=data_dir))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def lenet(client):
    return client.post("/api/sessions", json={"preset": "lenet5"}).json()["id"]


def assert_clear_answer(response, allowed=(200, 201, 413, 415, 422, 429)):
    assert response.status_code in allowed, (response.status_code, response.text[:500])
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body, dict) and body.get("detail"), body
    return body


unit_floats = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, width=32)


@PROPERTY
@given(pixels=st.lists(st.lists(unit_floats, min_size=28, max_size=28), min_size=28, max_size=28),
       label=st.integers(0, 9))
def test_any_valid_pixels_trace_with_finite_numbers(client, lenet, pixels, label):
    response = client.post(f"/api/sessions/{lenet}/trace",
                           json={"input": {"pixels": pixels}, "label": label})
    body = assert_clear_answer(response, allowed=(200,))
    assert math.isfinite(body["loss"]) and body["label"] == label
    assert np.isfinite(np.asarray(body["input_grad"], dtype=float)).all()


junk = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.text(max_size=5),
                 st.floats(allow_nan=False, allow_infinity=False),
                 st.lists(st.integers(-3, 40), max_size=3))


@PROPERTY
@given(pixels=st.one_of(
    junk,
    st.lists(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=30), max_size=30),
    st.lists(st.lists(junk, min_size=28, max_size=28), min_size=28, max_size=28)),
    label=st.one_of(st.integers(-5, 15), junk))
def test_malformed_pixels_are_refused_with_422(client, lenet, pixels, label):
    response = client.post(f"/api/sessions/{lenet}/trace",
                           json={"input": {"pixels": pixels}, "label": label})
    assert_clear_answer(response, allowed=(200, 422))


def pair_or_int(low, high):
    return st.one_of(st.integers(low, high), st.lists(st.integers(low, high), min_size=2, max_size=2))


activations = st.sampled_from(["relu", "leaky_relu", "sigmoid", "tanh", "identity", "softmax",
                               "swish"])
layers = st.one_of(
    st.fixed_dictionaries({"type": st.just("conv"), "filters": st.integers(0, 5),
                           "kernel": pair_or_int(0, 6)},
                          optional={"stride": pair_or_int(0, 3), "padding": pair_or_int(0, 3),
                                    "activation": activations}),
    st.fixed_dictionaries({"type": st.sampled_from(["maxpool", "avgpool"]),
                           "size": pair_or_int(0, 4)}, optional={"stride": pair_or_int(0, 3)}),
    st.just({"type": "flatten"}),
    st.fixed_dictionaries({"type": st.just("dense"), "units": st.integers(0, 12)},
                          optional={"activation": activations}),
    st.dictionaries(st.sampled_from(["type", "units", "size", "bogus"]), junk, max_size=3),
)
hidden_activations = st.sampled_from(["relu", "leaky_relu", "sigmoid", "tanh", "identity"])


@st.composite
def valid_specs(draw):
    """Specs valid by construction: convolutions and pools that fit, then dense layers ending
    in the output the loss needs."""
    input_height, input_width = draw(st.integers(4, 14)), draw(st.integers(4, 14))
    height, width = input_height, input_width
    layers = []
    for _ in range(draw(st.integers(0, 2))):
        kernel = draw(st.integers(1, min(3, height, width)))
        padding = draw(st.integers(0, kernel - 1))
        layers.append({"type": "conv", "filters": draw(st.integers(1, 4)), "kernel": kernel,
                       "padding": padding, "activation": draw(hidden_activations)})
        height, width = height + 2 * padding - kernel + 1, width + 2 * padding - kernel + 1
        if height % 2 == 0 and width % 2 == 0 and draw(st.booleans()):
            layers.append({"type": draw(st.sampled_from(["maxpool", "avgpool"])), "size": 2})
            height, width = height // 2, width // 2
    layers.append({"type": "flatten"})
    for _ in range(draw(st.integers(0, 2))):
        layers.append({"type": "dense", "units": draw(st.integers(1, 12)),
                       "activation": draw(hidden_activations)})
    loss = draw(st.sampled_from(["cross_entropy", "binary_cross_entropy", "mse"]))
    if loss == "cross_entropy":
        units, activation = 10, "softmax"
    elif loss == "binary_cross_entropy":
        units, activation = 1, "sigmoid"
    else:
        units, activation = draw(st.sampled_from([1, 10])), draw(hidden_activations)
    layers.append({"type": "dense", "units": units, "activation": activation})
    return {"input_shape": [1, input_height, input_width], "layers": layers, "loss": loss,
            "dtype": draw(st.sampled_from(["float32", "float64"])),
            "seed": draw(st.integers(0, 2**32 - 1))}


arbitrary_specs = st.fixed_dictionaries(
    {"input_shape": st.one_of(st.lists(st.integers(0, 14), min_size=3, max_size=3), junk),
     "layers": st.one_of(st.lists(layers, max_size=6), junk)},
    optional={"loss": st.sampled_from(["cross_entropy", "mse", "binary_cross_entropy", "hinge"]),
              "dtype": st.sampled_from(["float32", "float64", "float16"]),
              "seed": st.one_of(st.integers(-1, 2**33), junk)},
)
specs = st.one_of(valid_specs(), arbitrary_specs)


@PROPERTY
@given(spec=specs)
def test_generated_specs_are_created_or_refused_and_created_ones_trace_and_step(client, spec):
    created = client.post("/api/sessions", json={"spec": spec})
    body = assert_clear_answer(created, allowed=(201, 422))
    if created.status_code == 422:
        assert "spec" in str(body["detail"]).lower() or "layer" in str(body["detail"]).lower()
    if created.status_code != 201:
        return
    session_id = body["id"]
    try:
        traced = client.post(f"/api/sessions/{session_id}/trace",
                             json={"input": {"dataset": "mnist", "index": 3}})
        assert_clear_answer(traced, allowed=(200, 422))
        stepped = client.post(f"/api/sessions/{session_id}/step", json={"batch_size": 2})
        assert_clear_answer(stepped, allowed=(200, 422))
        after = client.get(f"/api/sessions/{session_id}").json()["step"]
        assert after == (1 if stepped.status_code == 200 else 0)
    finally:
        client.delete(f"/api/sessions/{session_id}")


training_bodies = st.fixed_dictionaries({}, optional={
    "batch_size": st.one_of(st.integers(-2, 300), junk),
    "learning_rate": st.one_of(st.floats(-1, 20, allow_nan=False), junk),
    "optimizer": st.sampled_from(["sgd", "momentum", "adam", "rmsprop"]),
    "momentum": st.one_of(st.floats(-1, 2, allow_nan=False), st.none()),
    "beta1": st.one_of(st.floats(-1, 2, allow_nan=False), st.none()),
    "beta2": st.one_of(st.floats(-1, 2, allow_nan=False), st.none()),
    "eps": st.one_of(st.floats(-1, 2, allow_nan=False), st.none()),
    "input": st.one_of(st.none(), st.fixed_dictionaries({"dataset": st.just("mnist"),
                                                         "index": st.integers(-1, 10000)})),
})


@PROPERTY
@given(body=training_bodies)
def test_generated_step_bodies_either_step_once_or_change_nothing(client, body):
    session_id = client.post("/api/sessions", json={"preset": "tiny"}).json()["id"]
    try:
        before = client.get(f"/api/sessions/{session_id}/export").content
        response = client.post(f"/api/sessions/{session_id}/step", json=body)
        assert_clear_answer(response, allowed=(200, 422))
        step = client.get(f"/api/sessions/{session_id}").json()["step"]
        if response.status_code == 200:
            assert step == 1 and math.isfinite(response.json()["loss"])
        else:
            assert step == 0
            after = client.get(f"/api/sessions/{session_id}/export").content
            assert weights(after) == weights(before)
    finally:
        client.delete(f"/api/sessions/{session_id}")


def weights(exported):
    with np.load(io.BytesIO(exported)) as archive:
        return {name: archive[name].tobytes() for name in archive.files if name.startswith("net/")}


def sample_image_bytes():
    image = Image.new("L", (40, 50), 255)
    image.paste(0, (15, 10, 25, 40))
    out = {}
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP"):
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        out[fmt] = buffer.getvalue()
    return out


IMAGES = sample_image_bytes()


@PROPERTY
@given(fmt=st.sampled_from(sorted(IMAGES)), data=st.data())
def test_damaged_uploads_are_answered_with_pixels_or_a_clear_4xx(client, fmt, data):
    original = bytearray(IMAGES[fmt])
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(original) - 1), st.integers(0, 255)),
                               max_size=8))
    for position, value in edits:
        original[position] = value
    cut = data.draw(st.integers(0, len(original)))
    response = client.post("/api/images", files={"file": ("x", bytes(original[:cut]))})
    body = assert_clear_answer(response, allowed=(200, 413, 415, 422))
    if response.status_code == 200:
        pixels = np.asarray(body["pixels"], dtype=float)
        assert pixels.shape == (28, 28) and pixels.min() >= 0 and pixels.max() <= 1
