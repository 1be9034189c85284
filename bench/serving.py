"""The real app under uvicorn in a child process, on a free 127.0.0.1 port: the one launcher the
benchmarks and the tests that need a real server share."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """`with Server(data_dir, {"CNNVIZ_...": ...}) as server:` serves at `server.url` until the
    block ends. Its output goes to a temporary file (a pipe nobody reads could fill and stall it)."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.data_dir = data_dir
        self.extra_env = env or {}
        self.process: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "CNNVIZ_DATA_DIR": str(self.data_dir), **self.extra_env}
        env.setdefault("PYTHONPATH", str(PROJECT_ROOT))
        self.process = subprocess.Popen(
            # the cnnviz command: uvicorn with the project's protocol guards (app/cli.py)
            [sys.executable, "-m", "app.cli", "--host", HOST,
             "--port", str(self.port), "--log-level", "warning", "--no-access-log"],
            cwd=PROJECT_ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not answer within {timeout} s:\n{self.output()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        # SIGINT is uvicorn's graceful shutdown: lifespan handlers run, stores close.
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
