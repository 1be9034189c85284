"""Large and malformed bodies are refused cheaply: a JSON body over its own (small) limit is a 413
before it is read, a wrong pixel shape is one error (not one per element), and no 422 lists more
than a bounded number of problems. File uploads keep the larger limit."""

import io
import json

import pytest
from fastapi.testclient import TestClient

from app.main import MAX_REPORTED_ERRORS, create_app
from app.settings import Settings


@pytest.fixture
def make_client(tmp_path):
    clients = []

    def build(**settings):
        client = TestClient(create_app(Settings(session_store="memory", data_dir=tmp_path,
                                                **settings)))
        clients.append(client.__enter__())
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


def _post_json(client, path, raw: bytes):
    return client.post(path, content=raw, headers={"content-type": "application/json"})


def _tiny_session(client) -> str:
    response = client.post("/api/sessions", json={"preset": "tiny"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_json_body_over_its_limit_is_413_even_under_the_upload_limit(make_client):
    client = make_client()
    session_id = _tiny_session(client)
    flat = json.dumps({"input": {"pixels": [0.5] * 400_000}, "label": 3}).encode()
    assert 1024 * 1024 < len(flat) < 8 * 1024 * 1024
    response = _post_json(client, f"/api/sessions/{session_id}/trace", flat)
    assert response.status_code == 413
    assert "larger than the limit of 1 MB" in response.json()["detail"]


def test_a_file_upload_keeps_the_larger_limit(make_client):
    from PIL import Image

    client = make_client(max_image_pixels=4096 * 4096)
    buffer = io.BytesIO()
    # noise does not compress: a PNG of about 2 MB, over the JSON limit, under the upload one
    import numpy as np
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1200), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, "PNG")
    assert buffer.tell() > 1024 * 1024
    response = client.post("/api/images", files={"file": ("noise.png", buffer.getvalue())})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("pixels", [
    [0.5] * 600_000,                       # flat: the audit's 33-second case
    [[0.5]] * 200_000,                     # many one-pixel rows
    [[0.5] * 200_000],                     # one enormous row
    "not a list",
])
def test_a_wrong_pixel_shape_is_one_short_error(make_client, pixels):
    client = make_client(max_json_body_bytes=8 * 1024 * 1024)
    session_id = _tiny_session(client)
    raw = json.dumps({"input": {"pixels": pixels}, "label": 3}).encode()
    response = _post_json(client, f"/api/sessions/{session_id}/trace", raw)
    assert response.status_code == 422
    assert len(response.content) < 4096
    pixel_errors = [e for e in response.json()["detail"]
                    if "PixelsInput" in e["loc"] and "pixels" in e["loc"]]
    assert len(pixel_errors) == 1 and "28" in pixel_errors[0]["msg"]


def test_a_body_wrong_in_many_places_reports_a_bounded_list(make_client):
    client = make_client()
    session_id = _tiny_session(client)
    unknown = {f"field{i}": i for i in range(500)}  # 500 keys the body may not have
    response = client.post(f"/api/sessions/{session_id}/trace",
                           json={"input": {"dataset": "mnist", "index": 0}, **unknown})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert len(detail) == MAX_REPORTED_ERRORS + 1
    assert detail[-1]["type"] == "too_many_errors" and "more problems" in detail[-1]["msg"]


@pytest.mark.parametrize("raw", [
    b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",   # nesting deeper than the parser
    b'{"input": {"dataset": "mnist", "index": ' + b"9" * 5000 + b"}}",  # a 5000-digit number
    b'{"spec": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",
])
def test_unparseable_bodies_are_400_not_500(make_client, raw):
    client = make_client()
    session_id = _tiny_session(client)
    for path in (f"/api/sessions/{session_id}/trace", "/api/sessions"):
        response = _post_json(client, path, raw)
        assert response.status_code == 400, response.text
