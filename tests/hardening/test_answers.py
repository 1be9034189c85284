"""Answers in every case: integer overflow in a query is a 422, a 500 carries the security
headers and keeps the connection, unknown host names are refused (DNS rebinding), and a missing
page names no path on the server's disk."""

import socket
import threading
import time

import pytest
import uvicorn
from fastapi.testclient import TestClient

from app.main import create_app
from app.security import COMMON_HEADERS
from app.settings import Settings


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(Settings(session_store="memory", data_dir=tmp_path)),
                    raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize("url, status", [
    ("/api/mnist?offset=" + "9" * 30, 422),
    ("/api/mnist?offset=2147483647", 200),
    ("/api/mnist/" + "9" * 30, 404),
    ("/api/mnist?limit=" + "9" * 30, 422),
])
def test_huge_integers_in_queries_are_answered_not_500(client, url, status):
    response = client.get(url)
    assert response.status_code == status
    assert response.json()


def test_huge_since_on_history_is_fine(client):
    session_id = client.post("/api/sessions", json={"preset": "tiny"}).json()["id"]
    for since in ("9" * 40, "-" + "9" * 40):
        assert client.get(f"/api/sessions/{session_id}/history?since={since}").status_code == 200


def _broken_app(tmp_path):
    app = create_app(Settings(session_store="memory", data_dir=tmp_path))

    @app.get("/api/broken")
    def broken():
        raise RuntimeError("boom")

    return app


def test_a_500_carries_the_security_headers(tmp_path):
    with TestClient(_broken_app(tmp_path), raise_server_exceptions=False) as client:
        response = client.get("/api/broken")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; it has been logged"}
    for name, value in COMMON_HEADERS.items():
        assert response.headers[name] == value
    assert "content-security-policy" in response.headers


def test_a_500_keeps_the_connection_open(tmp_path):
    config = uvicorn.Config(_broken_app(tmp_path), host="127.0.0.1", port=0, log_level="critical",
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            answers = b""
            for path in ("/api/broken", "/api/health"):
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                while path == "/api/broken" and b"logged" not in answers:
                    answers += sock.recv(65536)
            while b'"ok"' not in answers:
                chunk = sock.recv(65536)
                assert chunk, "the server closed the connection after the 500"
                answers += chunk
        assert answers.startswith(b"HTTP/1.1 500") and b"HTTP/1.1 200" in answers
        assert b"connection: close" not in answers.lower()
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("host, allowed", [
    ("evil.example", False),
    ("evil.example:8000", False),
    ("127.0.0.1.evil.example", False),
    ("localhost.evil.example", False),
    ("127.0.0.1:8000", True),
    ("localhost:8000", True),
    ("LOCALHOST.", True),
    ("app.localhost", True),
    ("[::1]:8000", True),
    ("192.168.1.20", True),
    ("testserver", True),
])
def test_only_known_host_names_are_answered(client, host, allowed):
    response = client.get("/api/health", headers={"host": host})
    if allowed:
        assert response.status_code == 200
    else:
        assert response.status_code == 400
        detail = response.json()["detail"]
        assert "does not answer to the name" in detail
        assert "header" not in detail.lower() and "CNNVIZ" not in detail
        assert response.headers["x-frame-options"] == "DENY"


def test_more_names_come_from_the_settings(tmp_path):
    settings = Settings(session_store="memory", data_dir=tmp_path,
                        allowed_hosts="viz.school.example, other.example")
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/health", headers={"host": "viz.school.example:80"}).status_code == 200
        assert client.get("/api/health", headers={"host": "evil.example"}).status_code == 400
    anything = Settings(session_store="memory", data_dir=tmp_path, allowed_hosts="*")
    with TestClient(create_app(anything)) as client:
        assert client.get("/api/health", headers={"host": "evil.example"}).status_code == 200
    named = Settings(session_store="memory", data_dir=tmp_path, host="viz.local")
    with TestClient(create_app(named)) as client:
        assert client.get("/api/health", headers={"host": "viz.local:8000"}).status_code == 200


def test_a_missing_page_names_no_path_on_the_server(tmp_path):
    settings = Settings(session_store="memory", data_dir=tmp_path,
                        static_dir=tmp_path / "not-installed")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for url in ("/", "/static/js/app.js"):
            response = client.get(url)
            assert response.status_code == 404
            assert str(tmp_path) not in response.text and "not installed" in response.text
