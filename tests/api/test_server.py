"""The real thing: the ``cnnviz`` console command serving on a loopback port, driven with httpx,
including concurrent steps on one session."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    command = shutil.which("cnnviz")
    assert command, "the cnnviz console command is not installed (python3 -m pip install -e .)"
    port = _free_port()
    env = {**os.environ, "CNNVIZ_DATA_DIR": str(tmp_path_factory.mktemp("server-data"))}
    process = subprocess.Popen([command, "--port", str(port), "--log-level", "warning"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        # Generous: the machine is shared, and start-up imports NumPy, FastAPI and the engine.
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read().decode(errors="replace")
            try:
                if httpx.get(f"{base}/api/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not answer within 90 s"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_cnnviz_help_says_how_workers_share_sessions():
    result = subprocess.run([shutil.which("cnnviz"), "--help"], capture_output=True, text=True,
                            check=True)
    assert "--workers" in result.stdout and "--reload" in result.stdout
    help_text = " ".join(result.stdout.split())
    assert "share sessions through the database" in help_text and "127.0.0.1" in help_text


def test_served_health_page_and_trace(server):
    with httpx.Client(base_url=server, timeout=120) as client:
        assert client.get("/api/health").json() == {"status": "ok"}
        page = client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert client.get("/vendor/plotly.min.js").status_code == 200
        session_id = client.post("/api/sessions", json={"preset": "lenet5"}).json()["id"]
        trace = client.post(f"/api/sessions/{session_id}/trace",
                            json={"input": {"dataset": "mnist", "index": 7}})
        assert trace.status_code == 200 and len(trace.json()["layers"]) == 8
        bad = client.post(f"/api/sessions/{session_id}/step", json={"batch_size": 0})
        assert bad.status_code == 422


def test_served_chunked_body_over_the_limit_is_413(server):
    limit = 8 * 1024 * 1024  # the default CNNVIZ_MAX_BODY_BYTES

    def chunks():
        yield (b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
               b"Content-Type: image/png\r\n\r\n")
        for _ in range(limit // 65536 + 2):
            yield b"\0" * 65536

    with httpx.Client(base_url=server, timeout=120) as client:
        response = client.post("/api/images", content=chunks(),
                               headers={"content-type": "multipart/form-data; boundary=x"})
        assert response.status_code == 413 and "larger than the limit" in response.json()["detail"]
        declared = client.post("/api/images", content=b"\0" * (limit + 1))
        assert declared.status_code == 413


def _weights(client: httpx.Client, session_id: str) -> dict[str, np.ndarray]:
    data = client.get(f"/api/sessions/{session_id}/export").content
    with np.load(io.BytesIO(data)) as archive:
        return {name: archive[name] for name in archive.files if name.startswith("net/")}


def test_concurrent_steps_on_one_session_never_interleave(server):
    requests = 8
    options = {"batch_size": 4, "learning_rate": 0.05, "optimizer": "momentum"}
    with httpx.Client(base_url=server, timeout=120) as client:
        shared = client.post("/api/sessions", json={"preset": "tiny", "seed": 1}).json()["id"]
        sequential = client.post("/api/sessions", json={"preset": "tiny", "seed": 1}).json()["id"]

        def step(_):
            with httpx.Client(base_url=server, timeout=120) as own:
                return own.post(f"/api/sessions/{shared}/step", json=options).json()

        with ThreadPoolExecutor(max_workers=requests) as pool:
            answers = list(pool.map(step, range(requests)))
        for _ in range(requests):
            client.post(f"/api/sessions/{sequential}/step", json=options)

        assert sorted(a["step"] for a in answers) == list(range(1, requests + 1))
        drawn = sorted(i for a in answers for i in a["batch_indices"])
        assert drawn == list(range(requests * options["batch_size"]))
        # each update started from the previous one's result
        by_step = sorted(answers, key=lambda a: a["step"])
        for earlier, later in zip(by_step, by_step[1:]):
            assert earlier["params_after"] == later["params_before"]
        history = client.get(f"/api/sessions/{shared}/history").json()
        assert history["steps"] == list(range(1, requests + 1))
        a, b = _weights(client, shared), _weights(client, sequential)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
