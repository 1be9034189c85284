"""POST /api/images (the route and its error mapping) and the request-body size limit."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from app.main import create_app
from app.settings import Settings

from .conftest import create, snapshot


def _drawn_seven(fmt: str = "PNG") -> bytes:
    image = Image.new("L", (120, 160), 255)
    pen = ImageDraw.Draw(image)
    pen.line([(20, 30), (100, 30), (55, 140)], fill=0, width=14)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, fmt)
    return buffer.getvalue()


def _png_header_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def _upload(client, data: bytes, name: str = "digit.png", field: str = "file"):
    return client.post("/api/images", files={field: (name, data, "application/octet-stream")})


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_upload_turns_a_drawn_digit_into_mnist_style_pixels(client, fmt):
    response = _upload(client, _drawn_seven(fmt), name=f"seven.{fmt.lower()}")
    assert response.status_code == 200, response.text
    pixels = np.asarray(response.json()["pixels"])
    assert pixels.shape == (28, 28) and pixels.min() >= 0 and pixels.max() <= 1
    # light digit on a dark background, centred by mass
    assert pixels[0].max() == 0 and pixels[:, 0].max() == 0 and pixels.max() > 0.9
    rows, cols = np.indices(pixels.shape)
    centre = (rows * pixels).sum() / pixels.sum(), (cols * pixels).sum() / pixels.sum()
    assert np.allclose(centre, 14, atol=1.0), centre


def test_uploaded_pixels_can_be_traced(client):
    pixels = _upload(client, _drawn_seven()).json()["pixels"]
    session_id = create(client)
    response = client.post(f"/api/sessions/{session_id}/trace",
                           json={"input": {"pixels": pixels}, "label": 7})
    assert response.status_code == 200


@pytest.mark.parametrize("data, name, status", [
    (b"hello, this is text", "notes.txt", 415),
    (b"%PDF-1.4 not an image", "digit.png", 415),
    (_drawn_seven()[:200], "truncated.png", 422),
    (_drawn_seven("JPEG")[:300], "truncated.jpg", 422),
    (b"", "empty.png", 422),
    (_png_header_claiming(30000, 30000), "bomb.png", 413),
])
def test_bad_uploads_get_the_preprocessors_status_and_a_json_detail(client, data, name, status):
    response = _upload(client, data, name=name)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]


def test_header_bomb_is_refused_quickly_before_decoding(client):
    import time

    started = time.perf_counter()
    response = _upload(client, _png_header_claiming(30000, 30000))
    assert response.status_code == 413
    assert time.perf_counter() - started < 2.0


def test_upload_without_the_file_field_is_422(client):
    assert _upload(client, _drawn_seven(), field="image").status_code == 422
    assert client.post("/api/images", json={"file": "x"}).status_code == 422


def test_pixel_cap_comes_from_settings():
    with TestClient(create_app(Settings(max_image_pixels=50 * 50))) as client:
        response = _upload(client, _drawn_seven())
        assert response.status_code == 413 and "120×160" in response.json()["detail"]


def test_body_over_the_limit_is_413_from_content_length():
    with TestClient(create_app(Settings(max_body_bytes=4096))) as client:
        response = _upload(client, b"\0" * 10_000)
        assert response.status_code == 413
        assert "4 kB" in response.json()["detail"]  # said in words, not bytes
        big_json = b'{"preset": "' + b"x" * 5000 + b'"}'
        response = client.post("/api/sessions", content=big_json,
                               headers={"content-type": "application/json"})
        assert response.status_code == 413


def test_chunked_body_over_the_limit_is_413_and_the_session_unchanged():
    with TestClient(create_app(Settings(max_body_bytes=4096))) as client:
        app = client.app
        session_id = create(client, preset="tiny")
        before = snapshot(app, session_id)

        def chunks():
            yield b'{"batch_size": 2, "padding": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        response = client.post(f"/api/sessions/{session_id}/step", content=chunks(),
                               headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert response.json()["detail"]
        snapshot(app, session_id).assert_same_as(before)


def test_chunked_upload_over_the_limit_is_413():
    with TestClient(create_app(Settings(max_body_bytes=4096))) as client:
        body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
                b"Content-Type: image/png\r\n\r\n" + b"\0" * 20_000 + b"\r\n--b--\r\n")
        response = client.post("/api/images", content=iter([body[i:i + 1000]
                                                            for i in range(0, len(body), 1000)]),
                               headers={"content-type": "multipart/form-data; boundary=b"})
        assert response.status_code == 413


def test_body_under_the_limit_passes():
    with TestClient(create_app(Settings(max_body_bytes=4096))) as client:
        assert client.post("/api/sessions", json={"preset": "tiny"}).status_code == 201
