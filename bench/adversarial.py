"""A bounded adversarial run against the real server on 127.0.0.1 (never anything else).

Phases, each bounded in cases and seconds: memory bombs (networks whose im2col matrices dwarf
their activations), hostile bodies (a 3.8 MB flat pixel list, thousands of errors, deep
nesting), slow clients (headers and bodies a byte at a time, silent connections, a connection
flood), crafted and fuzzed session imports, odd queries and host names, and a full disk (a
2 MiB tmpfs, when this machine lets the run mount one). While each runs, a separate client asks
/api/health ten times a second on its own connection; the worst answer time is the event loop's
stall.

Printed: cases tried, 5xx answers by status, the server's peak RSS, the worst /api/health
latency under attack (target <= 1 s) and the longest single request.

    python bench/adversarial.py                        # this worktree's code
    python bench/adversarial.py --project /tmp/before  # another copy (e.g. main's, for "before")
    python bench/adversarial.py --schemathesis 250     # also tests/hardening/test_fuzz.py with
                                                       # 250 examples per operation (> 5,000)

The server runs with a 4 GiB address-space limit so that a memory bomb the caps let through
fails inside the server (a MemoryError) instead of exhausting this shared machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from serving import HOST, Server  # noqa: E402

ADDRESS_SPACE_LIMIT = 4 * 2**30
HEALTH_INTERVAL = 0.1


class Tally:
    """Every answer of the run: status counts, and the longest request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cases = 0
        self.statuses: Counter = Counter()
        self.longest = (0.0, "")
        self.no_answer = 0

    def record(self, label: str, status: int | None, seconds: float) -> None:
        with self.lock:
            self.cases += 1
            if status is None:
                self.no_answer += 1
            else:
                self.statuses[status] += 1
            if seconds > self.longest[0]:
                self.longest = (seconds, label)

    def record_probe(self) -> None:
        """A deliberately slow request: counted, but its duration is the attacker's."""
        with self.lock:
            self.cases += 1

    def server_errors(self) -> dict[int, int]:
        return {status: count for status, count in sorted(self.statuses.items()) if status >= 500}


class HealthWatch(threading.Thread):
    """Asks /api/health every 0.1 s over one keep-alive connection; keeps the worst latency per
    phase."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.phase = "idle"
        self.worst: dict[str, float] = {}
        self.failures: Counter = Counter()
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as client:
            while not self.stopping.is_set():
                phase = self.phase
                started = time.perf_counter()
                try:
                    ok = client.get("/api/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - started
                if not ok:
                    self.failures[phase] += 1
                self.worst[phase] = max(self.worst.get(phase, 0.0), elapsed)
                self.stopping.wait(HEALTH_INTERVAL)


class Attack:
    def __init__(self, server: Server, tally: Tally, watch: HealthWatch) -> None:
        self.server = server
        self.url = server.url
        self.tally = tally
        self.watch = watch
        self.client = httpx.Client(base_url=self.url, timeout=180)

    def request(self, label: str, method: str, path: str, **kwargs) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError:
            self.tally.record(label, None, time.perf_counter() - started)
            self.client.close()  # the connection may be gone: start a fresh one
            self.client = httpx.Client(base_url=self.url, timeout=180)
            return None
        self.tally.record(label, response.status_code, time.perf_counter() - started)
        return response

    def session(self, preset: str = "lenet5") -> str:
        response = self.request("create", "POST", "/api/sessions", json={"preset": preset})
        return response.json()["id"]

    # --- phases ------------------------------------------------------------------------------

    def memory_bombs(self) -> None:
        def conv(filters, kernel):
            return {"type": "conv", "filters": filters, "kernel": kernel,
                    "padding": kernel // 2, "activation": "relu"}

        head = [{"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}]
        bombs = [
            # within the old caps (they counted activations only); the im2col matrices of a
            # 25x25 kernel on a 128x128 map are what fills memory
            {"input_shape": [1, 128, 128], "dtype": "float64", "loss": "cross_entropy",
             "layers": [conv(3, 25) for _ in range(4)] + head},
            {"input_shape": [1, 128, 128], "dtype": "float64", "loss": "cross_entropy",
             "layers": [conv(2, 31) for _ in range(6)] + head},
            {"input_shape": [1, 96, 96], "dtype": "float64", "loss": "cross_entropy",
             "layers": [conv(4, 21) for _ in range(3)] + head},
        ]
        for number, spec in enumerate(bombs):
            created = self.request(f"bomb {number} create", "POST", "/api/sessions",
                                   json={"spec": spec})
            if created is None or created.status_code != 201:
                continue
            session_id = created.json()["id"]
            for body in ({"input": {"dataset": "mnist", "index": 0}},):
                self.request(f"bomb {number} trace", "POST",
                             f"/api/sessions/{session_id}/trace", json=body)
            self.request(f"bomb {number} step", "POST", f"/api/sessions/{session_id}/step",
                         json={"batch_size": 8})
        # after any failure, an ordinary request must still work
        session_id = self.session()
        self.request("trace after bombs", "POST", f"/api/sessions/{session_id}/trace",
                     json={"input": {"dataset": "mnist", "index": 1}})

    def hostile_bodies(self) -> None:
        session_id = self.session()
        path = f"/api/sessions/{session_id}/trace"
        bodies = {
            "flat pixel list, 3.8 MB": b'{"label": 3, "input": {"pixels": ['
                                       + b",".join([b"0.5"] * 950_000) + b"]}}",
            "one-pixel rows, 2 MB": b'{"label": 3, "input": {"pixels": ['
                                    + b",".join([b"[0.5]"] * 330_000) + b"]}}",
            "784 bad pixels": json.dumps({"label": 3, "input": {
                "pixels": [["x"] * 28 for _ in range(28)]}}).encode(),
            "5,000 unknown keys": json.dumps({"input": {"dataset": "mnist", "index": 0},
                                              **{f"k{i}": i for i in range(5000)}}).encode(),
            "nesting 100,000 deep": b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "a 4,000-digit index": b'{"input": {"dataset": "mnist", "index": '
                                   + b"9" * 4000 + b"}}",
        }
        for _ in range(2):
            for label, body in bodies.items():
                self.request(label, "POST", path, content=body,
                             headers={"content-type": "application/json"})
        spec_bomb = {"spec": {"input_shape": [1, 28, 28], "layers": [{"type": "flatten"}] * 5000,
                              "loss": "mse"}}
        self.request("a spec of 5,000 layers", "POST", "/api/sessions", json=spec_bomb)

    def slow_clients(self, count: int, seconds: float) -> dict[str, int]:
        """``count`` connections that send a header byte every 2 s, for ``seconds``; returns how
        many the server closed on its own."""
        sockets = []
        for _ in range(count):
            try:
                sock = socket.create_connection((HOST, self.server.port), timeout=5)
            except OSError:
                break
            sock.setblocking(False)
            sockets.append(sock)
        request = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 500
        deadline = time.monotonic() + seconds
        position = 0
        closed = set()
        while time.monotonic() < deadline:
            for index, sock in enumerate(sockets):
                if index in closed:
                    continue
                try:
                    sock.send(request[position:position + 1])
                    if sock.recv(4096) == b"":
                        closed.add(index)
                except BlockingIOError:
                    pass
                except OSError:
                    closed.add(index)
                else:
                    closed.add(index)  # answered (408/503): the server closes it
            position = (position + 1) % len(request)
            time.sleep(2.0)
        for sock in sockets:
            sock.close()
        self.tally.cases += len(sockets)
        return {"opened": len(sockets), "closed by the server": len(closed)}

    def slow_body(self) -> str:
        body = b'{"preset": "tiny"}' + b" " * 100
        head = (b"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                b"application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        with socket.create_connection((HOST, self.server.port), timeout=90) as sock:
            sock.sendall(head)
            sock.settimeout(0.0)
            started = time.monotonic()
            for byte in body[:45]:  # 45 bytes at one per 2 s: 90 s
                try:
                    sock.send(bytes([byte]))
                    answer = sock.recv(4096)
                    self.tally.record_probe()
                    status = answer.split(b"\r\n", 1)[0].decode() or "closed"
                    return f"{status} after {time.monotonic() - started:.0f} s"
                except BlockingIOError:
                    pass
                except OSError:
                    return "closed"
                time.sleep(2.0)
        self.tally.record_probe()
        return "still open after 90 s"

    def imports(self, fuzz_cases: int) -> None:
        session_id = self.session("tiny")
        self.request("train", "POST", f"/api/sessions/{session_id}/train",
                     json={"steps": 3, "batch_size": 4, "optimizer": "adam"})
        exported = self.request("export", "GET", f"/api/sessions/{session_id}/export").content
        with np.load(io.BytesIO(exported)) as archive:
            members = {name: archive[name] for name in archive.files}
        meta = json.loads(members["meta.json"].tobytes())

        def pack(changes=None, meta_text=None, extra=None, compressed=False):
            files = dict(members, **(extra or {}))
            text = meta_text if meta_text is not None else json.dumps({**meta, **(changes or {})})
            files["meta.json"] = np.frombuffer(text.encode(), dtype=np.uint8)
            buffer = io.BytesIO()
            (np.savez_compressed if compressed else np.savez)(buffer, **files)
            return buffer.getvalue()

        def with_raw_member(name, payload):
            source = zipfile.ZipFile(io.BytesIO(exported))
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as target:
                for info in source.infolist():
                    if info.filename != name:
                        target.writestr(info.filename, source.read(info))
                target.writestr(name, payload)
            return buffer.getvalue()

        huge_header = (b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, "
                       b"'shape': (1000000000000,), }").ljust(128 - 1, b" ") + b"\n"
        optimizer_pairs = [[key, "0.5" if key == "learning_rate" else value]
                           for key, value in meta["optimizer_state"]["__dict__"]]
        entries = 2_000_000
        crafted = {
            "huge declared shape": with_raw_member("net/0.W.npy", huge_header + b"\0" * 64),
            "malformed header": with_raw_member("net/0.W.npy", b"\x93NUMPY\x01\x00\x10\x00{bad}\n"),
            "deep nesting": pack(meta_text="[" * 50_000 + "]" * 50_000),
            "Infinity": pack(meta_text=json.dumps(meta).replace(
                f'"created_at": {json.dumps(meta["created_at"])}', '"created_at": Infinity')),
            "step 10**30": pack({"step": 10**30}),
            "cursor 2**63-1": pack({"cursor": 2**63 - 1}),
            "text learning rate": pack({"optimizer_state": {"__dict__": optimizer_pairs}}),
            "unknown member": pack(extra={"payload": np.zeros(10)}),
            "history amplifier": pack(extra={"history/steps": np.full(entries, 7, np.int64),
                                             "history/loss": np.ones(entries),
                                             "history/accuracy": np.zeros(entries)},
                                      compressed=True),
        }
        accepted = []
        for label, data in crafted.items():
            response = self.request(f"import: {label}", "POST", "/api/sessions/import",
                                    files={"file": ("s.npz", data)})
            if response is not None and response.status_code == 201:
                accepted.append(response.json()["id"])
        rng = random.Random(0)
        for number in range(fuzz_cases):
            raw = bytearray(exported)
            for _ in range(rng.randint(1, 6)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            response = self.request(f"import fuzz {number}", "POST", "/api/sessions/import",
                                    files={"file": ("s.npz", bytes(raw))})
            if response is not None and response.status_code == 201:
                accepted.append(response.json()["id"])
        # every accepted import must answer on every endpoint
        for imported in accepted[:20]:
            base = f"/api/sessions/{imported}"
            self.request("imported: history", "GET", f"{base}/history")
            self.request("imported: export", "GET", f"{base}/export")
            self.request("imported: step", "POST", f"{base}/step", json={"batch_size": 2})
            self.request("imported: delete", "DELETE", base)

    def odd_requests(self) -> None:
        session_id = self.session("tiny")
        for url in ("/api/mnist?offset=" + "9" * 30, "/api/mnist/" + "9" * 30,
                    f"/api/sessions/{session_id}/history?since=" + "9" * 40,
                    "/api/mnist?limit=125.0", "/static/../../etc/passwd", "/static/nothing.js"):
            self.request(f"GET {url[:40]}", "GET", url)
        for host in ("evil.example", "127.0.0.1.evil.example", "localhost"):
            self.request(f"host {host}", "GET", "/api/health", headers={"host": host})
        for body in ({"preset": "tiny", "spec": {}}, {"batch_size": 4, "momentum": 0.9},
                     {"limit": 125.0}):
            path = "/api/sessions" if "preset" in body else (
                f"/api/sessions/{session_id}/evaluate" if "limit" in body
                else f"/api/sessions/{session_id}/step")
            self.request(f"contract {sorted(body)}", "POST", path, json=body)

    def close(self) -> None:
        self.client.close()


def mount_tmpfs(size: str) -> Path | None:
    folder = Path(tempfile.mkdtemp(prefix="cnnviz-full-disk-"))
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                            capture_output=True)
    if result.returncode != 0:
        folder.rmdir()
        return None
    return folder


def full_disk(project: Path, tally: Tally) -> dict:
    """A server whose data folder is a 2 MiB tmpfs: step until the disk is full, then check
    that the acknowledged steps are what a restarted server reads."""
    folder = mount_tmpfs("2m")
    if folder is None:
        return {"skipped": "cannot mount a tmpfs here"}
    try:
        server = start(project, folder, {})
        acknowledged: dict[str, int] = {}
        statuses: Counter = Counter()

        def call(label, method, path, **kwargs):
            started = time.perf_counter()
            try:
                with httpx.Client(base_url=server.url, timeout=60) as client:
                    response = client.request(method, path, **kwargs)
            except httpx.HTTPError:
                tally.record(label, None, time.perf_counter() - started)
                statuses["no answer"] += 1
                return None
            tally.record(label, response.status_code, time.perf_counter() - started)
            statuses[response.status_code] += 1
            return response

        def step_of(session_id):
            response = call("full disk: get", "GET", f"/api/sessions/{session_id}")
            return response.json().get("step") if response is not None else None

        try:
            for attempt in range(120):
                response = call("full disk: create", "POST", "/api/sessions",
                                json={"preset": "tiny"})
                if response is not None and response.status_code == 201:
                    acknowledged[response.json()["id"]] = 0
                for session_id in list(acknowledged)[-3:]:
                    step = call("full disk: step", "POST", f"/api/sessions/{session_id}/step",
                                json={"batch_size": 4})
                    if step is not None and step.status_code == 200:
                        acknowledged[session_id] = step.json()["step"]
                if sum(count for status, count in statuses.items()
                       if status == "no answer" or status >= 500) >= 20:
                    break
            shown = {sid: step_of(sid) for sid in acknowledged}
        finally:
            server.stop()
        server = start(project, folder, {})
        try:
            after_restart = {sid: step_of(sid) for sid in acknowledged}
        finally:
            server.stop()
        return {"answers": dict(statuses),
                "sessions acknowledged": len(acknowledged),
                "GET disagrees with the acknowledged step":
                    sum(shown[sid] != step for sid, step in acknowledged.items()),
                "acknowledged steps lost in a restart":
                    sum(after_restart[sid] != step for sid, step in acknowledged.items())}
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)
        folder.rmdir()


def start(project: Path, data_dir: Path, env: dict[str, str]) -> Server:
    server = Server(data_dir, {"PYTHONPATH": str(project), **env})
    # The server is the project's `cnnviz` command (app/cli.py) from the copy under test.
    server_cwd = project

    def launch(timeout: float = 60.0) -> None:
        environment = {**os.environ, "CNNVIZ_DATA_DIR": str(data_dir), **server.extra_env}
        server.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "--host", HOST, "--port", str(server.port),
             "--log-level", "warning"],
            cwd=server_cwd, env=environment, stdout=server.log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(
                resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{server.url}/api/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server did not start:\n{server.output()}")

    launch()
    return server


def peak_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def schemathesis_run(project: Path, examples: int) -> str:
    """tests/hardening/test_fuzz.py (this worktree's) against the project's app."""
    fuzz = HERE.parent / "tests" / "hardening" / "test_fuzz.py"
    env = {**os.environ, "PYTHONPATH": str(project), "CNNVIZ_FUZZ_EXAMPLES": str(examples)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "--rootdir",
         str(fuzz.parent), "--confcutdir", str(fuzz.parent), str(fuzz)],
        cwd=str(project), env=env, capture_output=True, text=True, timeout=3600)
    lines = result.stdout.strip().splitlines()
    counts = next((line for line in lines if line.startswith("fuzzed cases")), "")
    return f"{counts} | {lines[-1] if lines else result.stderr[-300:]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=HERE.parent,
                        help="the copy of the project to serve (default: this worktree)")
    parser.add_argument("--slow-clients", type=int, default=300)
    parser.add_argument("--import-fuzz", type=int, default=150)
    parser.add_argument("--schemathesis", type=int, default=0,
                        help="also run the schemathesis suite with this many examples per "
                             "operation (0: skip)")
    args = parser.parse_args()
    project = args.project.resolve()
    started = time.perf_counter()
    tally = Tally()
    data_dir = Path(tempfile.mkdtemp(prefix="cnnviz-adversarial-"))
    server = start(project, data_dir, {"CNNVIZ_MAX_SESSIONS": "10000"})
    watch = HealthWatch(server.url)
    watch.start()
    attack = Attack(server, tally, watch)
    report: dict = {"project": str(project)}
    try:
        time.sleep(1.0)
        for phase, run in [
            ("memory bombs", attack.memory_bombs),
            ("hostile bodies", attack.hostile_bodies),
            ("slow clients", lambda: report.__setitem__(
                "slow clients (30 s)", attack.slow_clients(args.slow_clients, 30.0))),
            ("slow body", lambda: report.__setitem__("slow body", attack.slow_body())),
            ("imports", lambda: attack.imports(args.import_fuzz)),
            ("odd requests", attack.odd_requests),
        ]:
            watch.phase = phase
            phase_started = time.perf_counter()
            run()
            report.setdefault("phase seconds", {})[phase] = round(
                time.perf_counter() - phase_started, 1)
        watch.phase = "after"
        time.sleep(1.0)
        report["server peak RSS (MiB)"] = peak_rss_mib(server.process.pid)
        report["server still answering"] = httpx.get(f"{server.url}/api/health",
                                                     timeout=30).status_code == 200
    finally:
        watch.stopping.set()
        watch.join(130)
        attack.close()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    report["full disk (2 MiB tmpfs)"] = full_disk(project, tally)
    if args.schemathesis:
        report["schemathesis"] = schemathesis_run(project, args.schemathesis)
    report["cases tried"] = tally.cases
    report["answers by status"] = dict(sorted(tally.statuses.items()))
    report["5xx answers"] = tally.server_errors()
    report["requests with no answer"] = tally.no_answer
    report["worst /api/health latency under attack (s)"] = {
        phase: round(seconds, 3) for phase, seconds in watch.worst.items()}
    report["/api/health failures"] = dict(watch.failures)
    report["longest single request (s)"] = [round(tally.longest[0], 2), tally.longest[1]]
    report["run seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
