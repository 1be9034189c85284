"""Error answers are JSON 4xx; the last-resort handler turns a bug into a logged JSON 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings


def test_unexpected_exception_becomes_a_logged_json_500(caplog):
    app = create_app(Settings())

    @app.get("/api/broken")
    def broken():
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/broken")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; it has been logged"}
    assert any("boom" in (record.exc_text or "") or record.exc_info for record in caplog.records)


@pytest.mark.parametrize("method, url", [
    ("GET", "/api/sessions/unknown"), ("DELETE", "/api/sessions/unknown"),
    ("GET", "/api/sessions/unknown/history"), ("GET", "/api/sessions/unknown/export"),
    ("POST", "/api/sessions/unknown/train"), ("POST", "/api/sessions/unknown/evaluate"),
])
def test_unknown_session_is_404_on_every_route(client, method, url):
    response = client.request(method, url, json={} if method == "POST" else None)
    assert response.status_code == 404
    assert "unknown" in response.json()["detail"]


def test_wrong_method_is_a_json_405(client):
    response = client.put("/api/health")
    assert response.status_code == 405 and response.json()["detail"]


def test_json_body_sent_as_text_is_refused(client):
    response = client.post("/api/sessions", content=b'{"preset": "tiny"}',
                           headers={"content-type": "text/plain"})
    assert response.status_code == 422
