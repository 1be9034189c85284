"""Security: headers on every answer, CORS off unless configured, unguessable session ids checked
before any lookup, no request path reaching files outside the served folders, loopback by
default, and a page that works under its Content-Security-Policy."""

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.cli import build_parser
from app.main import create_app
from app.security import SESSION_ID
from app.sessions import new_session_id
from app.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_client(tmp_path):
    clients = []

    def build(**settings):
        client = TestClient(create_app(Settings(data_dir=tmp_path, **settings)))
        clients.append(client.__enter__())
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


def assert_security_headers(response):
    headers = response.headers
    policy = headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"


def test_every_kind_of_answer_carries_the_security_headers(make_client):
    client = make_client()
    session_id = client.post("/api/sessions", json={"preset": "tiny"}).json()["id"]
    answers = [
        client.get("/"),
        client.get("/vendor/plotly.min.js"),
        client.get("/static/js/server/api.js"),
        client.get("/api/health"),
        client.post(f"/api/sessions/{session_id}/trace", json={"input": {"dataset": "mnist", "index": 1}}),
        client.get(f"/api/sessions/{session_id}/export"),
        client.get("/api/sessions/AAAAAAAAAAAAAAAAAAAAAA"),  # 404
        client.post("/api/sessions", json={"preset": 3}),  # 422
        client.put("/api/health"),  # 405
        client.get("/no/such/page"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 200, 404, 422, 405, 404]
    for answer in answers:
        assert_security_headers(answer)


def test_api_docs_get_their_own_narrow_policy(make_client):
    policy = make_client().get("/docs").headers["content-security-policy"]
    assert "https://cdn.jsdelivr.net" in policy and "frame-ancestors 'none'" in policy


def test_cors_is_off_by_default(make_client):
    client = make_client()
    origin = {"Origin": "http://elsewhere.example"}
    assert "access-control-allow-origin" not in client.get("/api/health", headers=origin).headers
    preflight = client.options("/api/sessions", headers={
        **origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_exactly_the_configured_origins(make_client):
    client = make_client(cors_origins=["http://localhost:5173"])
    allowed = client.get("/api/health", headers={"Origin": "http://localhost:5173"})
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:5173"
    other = client.get("/api/health", headers={"Origin": "http://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers
    preflight = client.options("/api/sessions", headers={
        "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 200 and "POST" in preflight.headers["access-control-allow-methods"]
    assert_security_headers(preflight)


def test_cors_origins_come_from_a_comma_separated_setting(monkeypatch):
    monkeypatch.setenv("CNNVIZ_CORS_ORIGINS", "http://a.example, http://b.example")
    assert Settings().cors_origins == ["http://a.example", "http://b.example"]
    monkeypatch.delenv("CNNVIZ_CORS_ORIGINS")
    assert Settings().cors_origins == []


def test_session_ids_are_128_random_bits_in_the_checked_pattern(make_client):
    ids = {new_session_id() for _ in range(5000)}
    assert len(ids) == 5000 and all(SESSION_ID.fullmatch(i) for i in ids)
    created = make_client().post("/api/sessions", json={"preset": "tiny"}).json()["id"]
    assert SESSION_ID.fullmatch(created)


HOSTILE_IDS = ["..", "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "a" * 21, "a" * 23,
               "AAAAAAAAAAAAAAAAAAAA/.", "sessions.sqlite3", "x' OR '1'='1", "%00" * 22, "~root"]


@pytest.mark.parametrize("session_id", HOSTILE_IDS)
def test_malformed_session_ids_are_404_before_any_lookup(make_client, tmp_path, session_id):
    client = make_client()
    before = sorted(os.listdir(tmp_path))
    for method, suffix in [("GET", ""), ("DELETE", ""), ("GET", "/export"), ("POST", "/step")]:
        response = client.request(method, f"/api/sessions/{session_id}{suffix}",
                                  json={} if method == "POST" else None)
        assert response.status_code == 404, (method, suffix, response.text)
        assert "detail" in response.json()
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("path", [
    "/static/../app/settings.py", "/static/..%2fapp%2fsettings.py", "/static/%2e%2e/app/settings.py",
    "/static/%2e%2e%2fapp%2fsettings.py", "/static//etc/passwd", "/vendor/../app/settings.py",
    "/static/js/../../app/settings.py", "/static/..\\app\\settings.py",
])
def test_paths_outside_the_served_folders_are_not_reachable(make_client, path):
    response = make_client().get(path)
    assert response.status_code == 404
    assert "BaseSettings" not in response.text and "root:" not in response.text


def test_exported_file_name_is_safe_whatever_the_imported_preset_says(make_client):
    client = make_client()
    session_id = client.post("/api/sessions", json={"preset": "tiny"}).json()["id"]
    exported = client.get(f"/api/sessions/{session_id}/export").content
    with np.load(io.BytesIO(exported)) as archive:
        members = {name: archive[name] for name in archive.files}
    meta = json.loads(members["meta.json"].tobytes())
    for preset in ['x"; filename="../../etc/passwd', "a\r\nSet-Cookie: stolen=1", "é/\\..", "tiny"]:
        meta["preset"] = preset
        members["meta.json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **members)
        imported = client.post("/api/sessions/import", files={"file": ("s.npz", buffer.getvalue())})
        assert imported.status_code == 201
        answer = client.get(f"/api/sessions/{imported.json()['id']}/export")
        assert answer.status_code == 200
        disposition = answer.headers["content-disposition"]
        name = disposition.split('filename="', 1)[1].rstrip('"')
        assert disposition.count('"') == 2 and "\r" not in disposition and "\n" not in disposition
        assert all(c.isalnum() or c in "-_." for c in name), name
        assert "set-cookie" not in {k.lower() for k in answer.headers.keys()}


def test_server_listens_on_loopback_unless_told_otherwise(bench_load, tmp_path):
    assert Settings().host == "127.0.0.1"
    assert build_parser().parse_args([]).host == "127.0.0.1"
    port = bench_load.free_port()
    env = {**os.environ, "CNNVIZ_DATA_DIR": str(tmp_path), "CNNVIZ_PORT": str(port)}
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "--log-level", "warning"],
                              cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        listening = listening_addresses(port)
        assert listening == {"127.0.0.1"}, listening
    finally:
        server.terminate()
        server.wait(30)


def listening_addresses(port):
    """Local addresses with a listening TCP socket on ``port``, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                local, state = row.split()[1], row.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    if len(address) == 8:
                        found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
                    else:
                        found.add(address)
    return found
