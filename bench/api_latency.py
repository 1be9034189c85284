"""Latency of the API against a real uvicorn server on 127.0.0.1, next to the engine alone.

Measures, for LeNet-5:
- trace: POST /api/sessions/{id}/trace of one MNIST sample (a different index each time);
- step:  POST /api/sessions/{id}/step with batch 32 (SGD);
each as an API client asks today (JSON, every field) and as the page asks (safetensors, the page's
default fields: ``serving.PAGE_QUERY``), and, with ``--baseline DIR``, against a checkout of the
code before a change (JSON and the page's pattern; e.g. ``git worktree``/``git archive main`` into
/tmp) in the same run.
The engine's own ``Network.trace`` of one sample and of a batch of 32 is timed in this process
right before each server variant, and each variant's ratio is to that reference, so the HTTP and
serialisation overhead can be read independently of how busy the machine is. Also printed: the
answer sizes, the app's work per request without HTTP (route logic + rendering), and the engine's
trace with a pause before each (requests reach a server with gaps; an idle CPU is slower to
start, which the tight-loop reference does not see).
Timings include reading the whole response body, not parsing it.

    python3 bench/api_latency.py                        # sqlite store, 200 traces, 40 steps, 3 rounds
    python3 bench/api_latency.py --baseline /tmp/main --implementations

With ``--rounds N`` the variants are served in turn N times (ABCABC...), and the summary gives
each variant's median over its rounds, so a burst of load on the machine does not decide a
comparison.

Bounded: every phase stops at its count or its time budget, whichever comes first.
"""

from __future__ import annotations

import os

# The same BLAS threading as the server (see app/__init__.py), so the engine-alone reference is
# timed under the conditions the API runs in.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlencode  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.presets import PRESETS  # noqa: E402
from engine import Network, train_split  # noqa: E402
from serving import HOST, PAGE_QUERY, SERVER_IMPLEMENTATIONS, Server  # noqa: E402

TRACE_RATIO_TARGET = 3.0
STEP_BYTES_TARGET = 400_000
DEFAULT_IMPLEMENTATION = "uvloop+httptools"


@dataclass(frozen=True)
class Variant:
    label: str
    root: Path
    query: dict[str, str]
    implementation: str = DEFAULT_IMPLEMENTATION


def timed(action, count: int, budget_s: float) -> np.ndarray:
    samples = []
    stop = time.monotonic() + budget_s
    for i in range(count):
        started = time.perf_counter()
        action(i)
        samples.append(time.perf_counter() - started)
        if time.monotonic() > stop:
            break
    return np.array(samples) * 1e3


def summary(name: str, ms: np.ndarray) -> str:
    return (f"{name:<40} n={len(ms):<4d} p50 {np.percentile(ms, 50):7.2f} ms   "
            f"p99 {np.percentile(ms, 99):7.2f} ms")


def engine_alone(count: int, budget_s: float) -> tuple[np.ndarray, np.ndarray]:
    network = Network.from_spec(PRESETS["lenet5"].spec_with_seed(0))
    images, labels = train_split()
    network.trace(images[:1], labels[:1])
    one = timed(lambda i: network.trace(images[i:i + 1], labels[i:i + 1]), count, budget_s)
    batch = timed(lambda i: network.trace(images[32 * i:32 * i + 32], labels[32 * i:32 * i + 32]),
                  max(count // 3, 5), budget_s)
    return one, batch


def engine_between_pauses(count: int, budget_s: float, pause_s: float = 0.001) -> None:
    """For reading the ratios, not part of them: the same engine trace with a pause before each
    one, as a server gets its requests (one at a time, with the network between). An idle CPU
    comes back slower than the tight loop of the reference (here ~0.15 ms of a 0.43 ms trace)."""
    network = Network.from_spec(PRESETS["lenet5"].spec_with_seed(0))
    images, labels = train_split()

    def trace(i):
        network.trace(images[i:i + 1], labels[i:i + 1])

    trace(0)
    print(summary("engine trace, tight loop (the reference)", timed(trace, count, budget_s)))
    samples = []
    for i in range(count):
        time.sleep(pause_s)
        started = time.perf_counter()
        trace(i)
        samples.append(time.perf_counter() - started)
    print(summary(f"engine trace, {pause_s * 1e3:g} ms pause before each",
                  np.array(samples) * 1e3))


def app_in_process(count: int, budget_s: float) -> None:
    """What the server does per request minus HTTP: the route's work and the rendering, as JSON
    with every field and as the page's safetensors; and the answers' sizes."""
    from app import training
    from app.schemas import DatasetInput, StepRequest
    from app.serialize import dumps, parse_fields, safetensors_answer
    from app.sessions import Session

    session = Session.create(PRESETS["lenet5"].spec_with_seed(0), preset="lenet5")
    options = StepRequest(batch_size=32, learning_rate=0.01, optimizer="sgd")
    page_fields = parse_fields(PAGE_QUERY["fields"])
    every_field = parse_fields(None)

    def trace(i, fields, render):
        sample = training.resolve_sample(session, DatasetInput(dataset="mnist", index=i), None)
        answer, _ = training.trace_sample(session, sample, fields=fields)  # (answer, input changed)
        return render(answer)

    for name, fields, render in (("JSON", every_field, dumps),
                                 ("safetensors, page fields", page_fields, safetensors_answer)):
        trace(0, fields, render)
        print(summary(f"app trace + {name}, no HTTP", timed(
            lambda i: trace(i, fields, render), count, budget_s)))
        print(summary(f"app step + {name}, no HTTP", timed(
            lambda i: render(training.step(session, options, None, 10**6, fields)),
            max(count // 3, 5), budget_s)))

    answer = training.step(session, options, None, 10**6)
    as_json = len(dumps(answer))
    without_repeat = len(dumps({k: v for k, v in answer.items() if k != "params_before"}))
    print(f"step answer sizes: JSON {as_json / 1e6:.2f} MB (params_before, a repeat of "
          f"trace.layers[i].params, is {(as_json - without_repeat) / 1e6:.2f} MB of it; "
          f"?fields= without 'params' drops it); safetensors every field "
          f"{len(safetensors_answer(answer)) / 1e6:.2f} MB; safetensors page fields "
          f"{len(safetensors_answer(training.step(session, options, None, 10**6, page_fields))) / 1e3:.0f} KB")


class ThinClient:
    """HTTP/1.1 POSTs on one kept-alive socket, each answer read whole (status checked, body read
    to its Content-Length) straight into one buffer kept for the connection, as a browser's
    native fetch does: the only copy is the kernel's. A browser parses an answer in native code;
    http.client parses its headers with the email package, which added ~0.05 ms per request
    here, a tenth of the engine's trace, and building each answer by appending received chunks
    copied a 150 KB answer four times: the client's cost, not the server's."""

    def __init__(self, port: int, buffer_bytes: int = 1 << 23) -> None:
        self.socket = socket.create_connection((HOST, port), timeout=60)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray(buffer_bytes)
        self.view = memoryview(self.buffer)

    def post(self, path: str, body: bytes) -> tuple[int, memoryview]:
        """(status, body); the body is a view of the connection's buffer, valid until the next
        request."""
        self.socket.sendall(f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\n"
                            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                            "\r\n".encode() + body)
        filled = 0
        while (head_end := self.buffer.find(b"\r\n\r\n", 0, filled)) < 0:
            filled += self._read_into(filled)
        status_line, *header_lines = bytes(self.view[:head_end]).split(b"\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in header_lines
                      if line.lower().startswith(b"content-length:"))
        body_start = head_end + 4
        if body_start + length > len(self.buffer):
            raise SystemExit(f"an answer of {length} bytes is larger than the client's buffer")
        while filled < body_start + length:
            filled += self._read_into(filled)
        # one request at a time: nothing can follow the answer
        return int(status_line.split()[1]), self.view[body_start:body_start + length]

    def _read_into(self, offset: int) -> int:
        count = self.socket.recv_into(self.view[offset:])
        if not count:
            raise ConnectionError("the server closed the connection")
        return count

    def close(self) -> None:
        self.socket.close()


def bench_server(variant: Variant, store: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="cnnviz-bench-") as data_dir:
        server = Server(Path(data_dir), {"CNNVIZ_SESSION_STORE": store}, root=variant.root,
                        uvicorn_args=SERVER_IMPLEMENTATIONS[variant.implementation])
        with server:
            session_id = httpx.post(f"{server.url}/api/sessions",
                                    json={"preset": "lenet5"}).json()["id"]
            # A thin client on one kept-alive connection, like a browser's native one, so the
            # numbers are the server's (httpx's pure-Python parsing alone added ~10 ms to a 1.5 MB
            # answer here).
            connection = ThinClient(server.port)
            query = f"?{urlencode(variant.query)}" if variant.query else ""
            sizes = {}

            def post(kind: str, body: dict) -> None:
                status, data = connection.post(f"/api/sessions/{session_id}/{kind}{query}",
                                               json.dumps(body).encode())
                if status != 200:
                    raise SystemExit(f"{kind} answered {status}: {bytes(data[:200])!r}")
                sizes[kind] = len(data)

            def trace(i):
                post("trace", {"input": {"dataset": "mnist", "index": i % 9000}})

            def step(_):
                post("step", {"batch_size": 32, "learning_rate": 0.01, "optimizer": "sgd"})

            try:
                for i in range(5):
                    trace(i)
                    step(i)
                results = {"trace": timed(trace, args.traces, args.budget),
                           "step": timed(step, args.steps, args.budget)}
            finally:
                connection.close()
            results["sizes"] = sizes
            return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["memory", "sqlite", "both"], default="sqlite")
    # enough traces and rounds that the page trace's ratio moves by a few hundredths between
    # runs rather than by tenths (60 traces in 1 round: 2.55-3.01 in three runs, one machine)
    parser.add_argument("--traces", type=int, default=200)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per phase at most")
    parser.add_argument("--baseline", type=Path,
                        help="a checkout of the code before (served with JSON requests and "
                             "with the page's)")
    parser.add_argument("--rounds", type=int, default=3, help="serve every variant this often")
    parser.add_argument("--implementations", action="store_true",
                        help="also serve the page's requests with asyncio + h11 instead of "
                             "uvloop + httptools")
    args = parser.parse_args()

    variants = []
    if args.baseline:
        variants += [Variant("before (baseline), JSON", args.baseline.resolve(), {}),
                     Variant("before (baseline), page: safetensors + fields",
                             args.baseline.resolve(), PAGE_QUERY)]
    variants += [Variant("this code, JSON", ROOT, {}),
                 Variant("this code, safetensors, every field", ROOT, {"format": "safetensors"}),
                 Variant("this code, page: safetensors + fields", ROOT, PAGE_QUERY)]
    if args.implementations:
        variants.append(Variant("this code, page, asyncio+h11", ROOT, PAGE_QUERY, "asyncio+h11"))

    app_in_process(args.traces, args.budget)
    engine_between_pauses(args.traces, args.budget)
    measured: dict[tuple[str, int], list[tuple[float, float, dict]]] = {}
    for round_ in range(1, args.rounds + 1):
        for store in (["memory", "sqlite"] if args.store == "both" else [args.store]):
            for variant in variants:
                engine_one, engine_batch = engine_alone(args.traces, args.budget)
                results = bench_server(variant, store, args)
                trace_ratio = np.percentile(results["trace"], 50) / np.percentile(engine_one, 50)
                step_ratio = np.percentile(results["step"], 50) / np.percentile(engine_batch, 50)
                measured.setdefault((store, variants.index(variant)), []).append((trace_ratio, step_ratio,
                                                                  results))
                sizes = results["sizes"]
                print(f"--- round {round_}: {variant.label}, {variant.implementation}, {store} "
                      f"store: trace answer {sizes['trace'] / 1e3:.0f} KB, step answer "
                      f"{sizes['step'] / 1e3:.0f} KB")
                print(summary("engine trace, 1 sample (in process)", engine_one))
                print(summary("engine trace, batch 32 (in process)", engine_batch))
                print(summary("API trace lenet5, 1 MNIST sample", results["trace"]))
                print(summary("API step lenet5, batch 32", results["step"]))
                print(f"ratio API trace / engine trace (p50): {trace_ratio:.2f}; "
                      f"API step / engine batch-32 trace (p50): {step_ratio:.2f}")

    print(f"=== summary: p50 ratios to the engine measured just before each server, and p50 "
          f"latencies; median over {args.rounds} round(s)")
    for (store, number), rounds in measured.items():
        variant = variants[number]
        trace_ratio, step_ratio = (float(np.median([r[i] for r in rounds])) for i in (0, 1))
        trace_ms, step_ms = (float(np.median([np.percentile(r[2][kind], 50) for r in rounds]))
                             for kind in ("trace", "step"))
        step_bytes = rounds[-1][2]["sizes"]["step"]
        print(f"{store:<7}{variant.label + ', ' + variant.implementation:<60} trace "
              f"{trace_ratio:6.2f}  step {step_ratio:6.2f}  trace {trace_ms:6.2f} ms  step "
              f"{step_ms:6.2f} ms  step answer {step_bytes / 1e3:7.0f} KB")
        if (variant.query == PAGE_QUERY and variant.implementation == DEFAULT_IMPLEMENTATION
                and variant.root == ROOT):
            print(f"  targets: page trace ratio <= {TRACE_RATIO_TARGET}: "
                  f"{'met' if trace_ratio <= TRACE_RATIO_TARGET else 'missed'}; page step "
                  f"answer <= {STEP_BYTES_TARGET / 1e3:.0f} KB: "
                  f"{'met' if step_bytes <= STEP_BYTES_TARGET else 'missed'}")

if __name__ == "__main__":
    main()
