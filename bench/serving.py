"""The real app under uvicorn in a child process, on a free 127.0.0.1 port: the one launcher the
benchmarks and the tests that need a real server share. ``RedisServer`` likewise starts Debian's
``redis-server`` for the Redis session store."""

from __future__ import annotations

import os
import shutil
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
# What the page asks for by default: the maps (z, a, delta), dL/da for the inspector and the
# max-pool winners, as safetensors; weights and their gradients only when a view needs them.
PAGE_QUERY = {"format": "safetensors", "fields": "z,a,delta,grad_a,argmax"}
# uvicorn's event loop and HTTP parser: uvloop + httptools (uvicorn[standard]) or the pure-Python
# asyncio + h11 it falls back to without them.
SERVER_IMPLEMENTATIONS = {"uvloop+httptools": ["--loop", "uvloop", "--http", "httptools"],
                          "asyncio+h11": ["--loop", "asyncio", "--http", "h11"]}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """`with Server(data_dir, {"CNNVIZ_...": ...}) as server:` serves at `server.url` until the
    block ends. Its output goes to a temporary file (a pipe nobody reads could fill and stall it).
    ``root`` serves another checkout of the project (a benchmark's "before"); ``uvicorn_args``
    are added to uvicorn's command line (e.g. one of ``SERVER_IMPLEMENTATIONS``)."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, *,
                 root: Path = PROJECT_ROOT, uvicorn_args: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.data_dir = data_dir
        self.extra_env = env or {}
        self.root = Path(root)
        self.uvicorn_args = list(uvicorn_args or [])
        self.process: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()

    def _command(self) -> list[str]:
        common = ["--host", HOST, "--port", str(self.port), "--log-level", "warning",
                  "--no-access-log"]
        if self.uvicorn_args or self.root != PROJECT_ROOT:
            # a benchmark comparing server implementations, or an older checkout: plain uvicorn
            return [sys.executable, "-m", "uvicorn", "app.main:app", *common, *self.uvicorn_args]
        # the cnnviz command: uvicorn with the project's protocol guards (app/cli.py)
        return [sys.executable, "-m", "app.cli", *common]

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "CNNVIZ_DATA_DIR": str(self.data_dir), **self.extra_env}
        # the served checkout's app and engine come first, whatever PYTHONPATH already holds
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.process = subprocess.Popen(
            self._command(), cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
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


class RedisServer:
    """`with RedisServer(folder) as redis:` runs ``redis-server`` on a free 127.0.0.1 port with its
    files in ``folder``, until the block ends; `redis.url` is the ``CNNVIZ_REDIS_URL``. With
    ``append_only`` every write goes to the append-only file before Redis answers (as a
    deployment should run it), so `restart()` keeps the data; without it nothing is written."""

    def __init__(self, folder: Path, *, append_only: bool = True) -> None:
        self.folder = Path(folder)
        self.append_only = append_only
        self.port = free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()

    def start(self, timeout: float = 30.0) -> None:
        command = shutil.which("redis-server")
        if command is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install "
                               "redis-server; scripts/test.sh does it)")
        self.folder.mkdir(parents=True, exist_ok=True)
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.append_only
                       else ["--appendonly", "no"])
        self.process = subprocess.Popen(
            [command, "--port", str(self.port), "--bind", HOST, "--dir", str(self.folder),
             "--save", "", *persistence, "--daemonize", "no", "--protected-mode", "yes"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n"
                                   f"{self.output()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout} s:\n{self.output()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.terminate()  # SIGTERM: Redis flushes its append-only file and exits
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port and folder."""
        self.stop()
        self.start()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def __enter__(self) -> "RedisServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
