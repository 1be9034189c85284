"""Slow clients time out and connections are bounded, measured with real sockets against the
real server (the cnnviz command, app/cli.py, with app/server_protocol.py)."""

import socket
import time

import httpx
import pytest

pytestmark = pytest.mark.slow

GUARDS = {"header_timeout_seconds": 1, "body_timeout_seconds": 2, "max_connections": 16}


@pytest.fixture(scope="module")
def guarded_server(bench_load, tmp_path_factory):
    server = bench_load.Server(tmp_path_factory.mktemp("slow"),
                               {f"CNNVIZ_{k.upper()}": str(v) for k, v in GUARDS.items()})
    server.start()
    yield server
    server.stop()


def _connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


def _trickle(sock: socket.socket, data: bytes, pause: float) -> bytes:
    """Send ``data`` a byte at a time; returns whatever the server answered once it closed the
    connection (b"" if it never did before all of data was sent)."""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(pause)
        sock.setblocking(False)
        try:
            answer = sock.recv(65536)
        except BlockingIOError:
            answer = None
        except ConnectionResetError:
            answer = b""
        finally:
            sock.setblocking(True)
        if answer is not None:
            return answer + _rest(sock)
    return b""


def _rest(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_headers_sent_a_byte_at_a_time_are_cut_off_with_408(guarded_server):
    request = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 40 + b"\r\n\r\n"
    with _connect(guarded_server) as sock:
        answer = _trickle(sock, request, 0.25)  # 10 s in all, the limit is 1 s
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"took too long" in answer


def test_a_body_sent_a_byte_at_a_time_is_cut_off_with_408(guarded_server):
    body = b'{"preset": "tiny"}' + b" " * 30
    head = (b"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    with _connect(guarded_server) as sock:
        sock.sendall(head)
        answer = _trickle(sock, body, 0.25)  # 12 s for the body, the limit is 2 s
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_a_connection_that_never_speaks_is_closed(guarded_server):
    with _connect(guarded_server) as sock:
        answer = _rest(sock)  # blocks until the server closes it (the socket timeout is 30 s)
    assert answer.startswith(b"HTTP/1.1 408")


def test_connections_beyond_the_bound_are_refused_and_the_server_recovers(guarded_server):
    held = [_connect(guarded_server) for _ in range(GUARDS["max_connections"] + 8)]
    try:
        refusals = 0
        for sock in held[GUARDS["max_connections"]:]:
            sock.settimeout(5)
            answer = _rest(sock)
            refusals += answer.startswith(b"HTTP/1.1 503")
        assert refusals == 8
    finally:
        for sock in held:
            sock.close()
    # the held ones are closed (by us, or by their header timeout): ordinary clients get through
    deadline = time.monotonic() + 10
    while True:
        try:
            response = httpx.get(f"{guarded_server.url}/api/health", timeout=5)
            if response.status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_ordinary_requests_and_keep_alive_are_unaffected(guarded_server):
    with httpx.Client(base_url=guarded_server.url, timeout=30) as client:
        session_id = client.post("/api/sessions", json={"preset": "tiny"}).json()["id"]
        for _ in range(3):
            assert client.post(f"/api/sessions/{session_id}/step",
                               json={"batch_size": 4}).status_code == 200
            time.sleep(1.5)  # idle longer than the header timeout, shorter than keep-alive
        assert client.get(f"/api/sessions/{session_id}").json()["step"] == 3
