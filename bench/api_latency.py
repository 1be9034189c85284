"""Latency of the API against a real uvicorn server on 127.0.0.1, next to the engine alone.

Measures, for LeNet-5:
- trace: POST /api/sessions/{id}/trace of one MNIST sample (a different index each time);
- step:  POST /api/sessions/{id}/step with batch 32 (SGD);
and, in this process during the same run, the engine's own ``Network.trace`` of one sample and of
a batch of 32, and the app's work for each request without HTTP (route logic + orjson). It prints p50 and p99 of each and the ratio of the API's trace to the engine's
trace alone, so the HTTP + JSON overhead can be read independently of how busy the machine is.
Timings include reading the whole response body, not parsing it.

    python3 bench/api_latency.py                 # both session stores, 60 traces, 40 steps
    python3 bench/api_latency.py --store memory --traces 200 --steps 100

Bounded: every phase stops at its count or its time budget, whichever comes first.
"""

from __future__ import annotations

import os

# The same BLAS threading as the server (see app/__init__.py), so the engine-alone reference is
# timed under the conditions the API runs in.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.presets import PRESETS  # noqa: E402
from engine import Network, train_split  # noqa: E402
from serving import HOST, Server  # noqa: E402  (bench/ is on sys.path as the script's folder)

TRACE_TARGET_MS = 15.0
STEP_TARGET_MS = 30.0


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
    return (f"{name:<34} n={len(ms):<4d} p50 {np.percentile(ms, 50):7.2f} ms   "
            f"p99 {np.percentile(ms, 99):7.2f} ms")


def engine_alone(count: int, budget_s: float) -> tuple[np.ndarray, np.ndarray]:
    network = Network.from_spec(PRESETS["lenet5"].spec_with_seed(0))
    images, labels = train_split()
    network.trace(images[:1], labels[:1])
    one = timed(lambda i: network.trace(images[i:i + 1], labels[i:i + 1]), count, budget_s)
    batch = timed(lambda i: network.trace(images[32 * i:32 * i + 32], labels[32 * i:32 * i + 32]),
                  max(count // 3, 5), budget_s)
    return one, batch


def app_in_process(count: int, budget_s: float) -> tuple[np.ndarray, np.ndarray]:
    """What the server does per request minus HTTP: the route's work and the orjson rendering."""
    from app import training
    from app.schemas import DatasetInput, StepRequest
    from app.serialize import dumps
    from app.sessions import Session

    session = Session.create(PRESETS["lenet5"].spec_with_seed(0), preset="lenet5")
    options = StepRequest(batch_size=32, learning_rate=0.01, optimizer="sgd")

    def trace(i):
        sample = training.resolve_sample(session, DatasetInput(dataset="mnist", index=i), None)
        dumps(training.trace_sample(session, sample))

    trace(0)
    traced = timed(trace, count, budget_s)
    stepped = timed(lambda i: dumps(training.step(session, options, None, 10**6)),
                    max(count // 3, 5), budget_s)
    return traced, stepped


def bench_store(store: str, args: argparse.Namespace) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="cnnviz-bench-") as data_dir:
        with Server(Path(data_dir), {"CNNVIZ_SESSION_STORE": store}) as server:
            base = server.url
            session_id = httpx.post(f"{base}/api/sessions",
                                    json={"preset": "lenet5"}).json()["id"]
            # http.client on one kept-alive connection: a thin client, like a browser's native
            # one, so the numbers are the server's (httpx's pure-Python parsing alone added ~10 ms
            # to a 1.5 MB answer here).
            connection = http.client.HTTPConnection(HOST, server.port, timeout=60)
            sizes = {}

            def post(kind: str, path: str, body: dict) -> None:
                connection.request("POST", path, body=json.dumps(body),
                                   headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
                if response.status != 200:
                    raise SystemExit(f"{path} answered {response.status}: {data[:200]!r}")
                sizes[kind] = len(data)

            def trace(i):
                post("trace", f"/api/sessions/{session_id}/trace",
                     {"input": {"dataset": "mnist", "index": i % 9000}})

            def step(_):
                post("step", f"/api/sessions/{session_id}/step",
                     {"batch_size": 32, "learning_rate": 0.01, "optimizer": "sgd"})

            try:
                for i in range(5):
                    trace(i)
                    step(i)
                results = {"trace": timed(trace, args.traces, args.budget),
                           "step": timed(step, args.steps, args.budget)}
            finally:
                connection.close()
            results["trace_bytes"] = np.array([sizes["trace"]])
            results["step_bytes"] = np.array([sizes["step"]])
            return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["memory", "sqlite", "both"], default="both")
    parser.add_argument("--traces", type=int, default=60)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per phase at most")
    args = parser.parse_args()

    engine_one, engine_batch = engine_alone(args.traces, args.budget)
    print(summary("engine trace, 1 sample (in process)", engine_one))
    print(summary("engine trace, batch 32 (in process)", engine_batch))
    app_trace, app_step = app_in_process(args.traces, args.budget)
    print(summary("app trace + JSON, no HTTP", app_trace))
    print(summary("app step + JSON, no HTTP", app_step))
    stores = ["memory", "sqlite"] if args.store == "both" else [args.store]
    for store in stores:
        results = bench_store(store, args)
        print(f"--- API over HTTP, {store} session store "
              f"(trace answer {results['trace_bytes'][0] / 1e6:.2f} MB, "
              f"step answer {results['step_bytes'][0] / 1e6:.2f} MB)")
        print(summary("trace lenet5, 1 MNIST sample", results["trace"]))
        print(summary("step lenet5, batch 32", results["step"]))
        trace_ratio = np.percentile(results["trace"], 50) / np.percentile(engine_one, 50)
        step_ratio = np.percentile(results["step"], 50) / np.percentile(engine_batch, 50)
        print(f"ratio API trace p50 / engine trace p50: {trace_ratio:.2f}")
        print(f"ratio API step p50 / engine batch-32 trace p50: {step_ratio:.2f}")
        print(f"targets: trace p50 <= {TRACE_TARGET_MS} ms: "
              f"{'met' if np.percentile(results['trace'], 50) <= TRACE_TARGET_MS else 'missed'}; "
              f"step p50 <= {STEP_TARGET_MS} ms: "
              f"{'met' if np.percentile(results['step'], 50) <= STEP_TARGET_MS else 'missed'}")


if __name__ == "__main__":
    main()
