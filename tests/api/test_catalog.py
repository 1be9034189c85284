"""Health, presets, MNIST browsing, the page and Plotly bundle, OpenAPI docs."""

from __future__ import annotations

import numpy as np
import pytest

from app.main import create_app
from app.presets import PRESETS
from app.settings import Settings
from engine import Network, test_split, train_split
from fastapi.testclient import TestClient

from .conftest import create


def test_health_answers_ok(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_presets_list_lenet5_and_tiny_as_in_the_design(client):
    presets = {p["name"]: p for p in client.get("/api/presets").json()}
    assert {"lenet5", "tiny", "mlp", "lenet1989", "deep"} <= set(presets)
    for preset in presets.values():
        assert preset["description"] and isinstance(preset["spec"], dict)

    lenet = presets["lenet5"]["spec"]
    assert lenet["input_shape"] == [1, 28, 28] and lenet["loss"] == "cross_entropy"
    assert [(layer["type"], layer.get("filters") or layer.get("units"), layer.get("activation"))
            for layer in lenet["layers"]] == [
        ("conv", 6, "relu"), ("maxpool", None, None), ("conv", 16, "relu"),
        ("maxpool", None, None), ("flatten", None, None), ("dense", 120, "relu"),
        ("dense", 84, "relu"), ("dense", 10, "softmax")]
    assert lenet["layers"][0]["kernel"] == 5 and lenet["layers"][0]["padding"] == 2
    assert lenet["layers"][2]["padding"] == 0

    tiny = presets["tiny"]["spec"]
    assert tiny["input_shape"] == [1, 6, 6] and tiny["loss"] == "binary_cross_entropy"
    assert [(layer["type"], layer.get("filters") or layer.get("units"), layer.get("activation"))
            for layer in tiny["layers"]] == [
        ("conv", 2, "relu"), ("maxpool", None, None), ("flatten", None, None),
        ("dense", 1, "sigmoid")]
    assert tiny["layers"][0]["kernel"] == 3
    assert presets["tiny"]["positive_class"] is not None
    assert str(presets["tiny"]["positive_class"]) in presets["tiny"]["description"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_traces_an_mnist_digit(client, name):
    session_id = create(client, preset=name, seed=3)
    trace = client.post(f"/api/sessions/{session_id}/trace",
                        json={"input": {"dataset": "mnist", "index": 5}}).json()
    network = Network.from_spec(PRESETS[name].spec_with_seed(3))
    assert np.asarray(trace["input"]).shape == network.input_shape
    assert len(trace["layers"]) == len(network.spec["layers"])
    assert trace["label"] == int(train_split()[1][5])


def test_mnist_page_lists_index_and_label_and_optionally_pixels(client):
    page = client.get("/api/mnist", params={"split": "test", "offset": 990, "limit": 20}).json()
    labels = test_split()[1]
    assert page["split"] == "test" and page["total"] == len(labels) and page["offset"] == 990
    assert [item["index"] for item in page["items"]] == list(range(990, 1000))
    assert [item["label"] for item in page["items"]] == labels[990:].tolist()
    assert "pixels" not in page["items"][0]

    with_pixels = client.get("/api/mnist", params={"limit": 2, "pixels": "true"}).json()
    np.testing.assert_array_equal(np.asarray(with_pixels["items"][1]["pixels"], np.float32),
                                  train_split()[0][1, 0])


def test_mnist_sample_gives_pixels_label_and_split(client):
    sample = client.get("/api/mnist/42", params={"split": "train"}).json()
    images, labels = train_split()
    assert sample["index"] == 42 and sample["split"] == "train"
    assert sample["label"] == int(labels[42])
    np.testing.assert_array_equal(np.asarray(sample["pixels"], np.float32), images[42, 0])


@pytest.mark.parametrize("url, status", [
    ("/api/mnist/9000", 404),
    ("/api/mnist/1000?split=test", 404),
    ("/api/mnist/-1", 422),
    ("/api/mnist/abc", 422),
    ("/api/mnist/3?split=validation", 422),
    ("/api/mnist?limit=0", 422),
    ("/api/mnist?limit=100000", 422),
    ("/api/mnist?offset=-5", 422),
])
def test_mnist_bad_queries_are_refused_with_json_detail(client, url, status):
    response = client.get(url)
    assert response.status_code == status
    assert response.json()["detail"]


def test_plotly_bundle_is_served_from_the_package_with_long_cache(client):
    import plotly
    from pathlib import Path

    response = client.get("/vendor/plotly.min.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert "max-age=31536000" in response.headers["cache-control"]
    bundle = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert response.content == bundle.read_bytes()


def test_page_and_static_files_come_from_the_static_directory(tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>page</title>")
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "app.js").write_text("export const x = 1;")
    with TestClient(create_app(Settings(static_dir=tmp_path))) as client:
        page = client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "<title>page</title>" in page.text
        script = client.get("/static/js/app.js")
        assert script.status_code == 200 and script.text == "export const x = 1;"
        assert client.get("/static/js/missing.js").status_code == 404


def test_missing_page_is_a_json_404(tmp_path):
    with TestClient(create_app(Settings(static_dir=tmp_path))) as client:
        response = client.get("/")
        assert response.status_code == 404 and "index.html" in response.json()["detail"]


def test_openapi_docs_list_every_api_path(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ["/api/health", "/api/presets", "/api/sessions", "/api/sessions/{session_id}",
                 "/api/sessions/{session_id}/trace", "/api/sessions/{session_id}/step",
                 "/api/sessions/{session_id}/train", "/api/sessions/{session_id}/evaluate",
                 "/api/sessions/{session_id}/history", "/api/sessions/{session_id}/export",
                 "/api/sessions/import", "/api/mnist", "/api/mnist/{index}", "/api/images"]:
        assert path in paths, path


def test_unknown_path_is_a_json_404(client):
    response = client.get("/api/nothing-here")
    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}
