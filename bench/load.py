"""A classroom's worth of load against the real server, on loopback only.

Starts the app with uvicorn on a free 127.0.0.1 port (a fresh data folder), then runs N simulated
students at once. Each opens a session and, until the time or the request budget runs out, picks
an action the way a student clicking around the page would: trace an MNIST digit, take a training
step (batch 32), or upload a picture of a digit, with a short think time between clicks. At the
end it prints throughput, p50/p99 latency per kind of request, the errors, and the server's
resident memory (sampled from /proc/<pid>/status) at start, after warm-up, at its peak and at the
end, so a leak shows as a climb after warm-up. One request of each kind warms the server up
before the clock starts (the first trace loads the MNIST sample).

    python bench/load.py                       # 20 students, 60 s
    python bench/load.py --students 5 --duration 10 --json
    python bench/load.py --store sqlite --store redis   # two server processes on each store

With ``--store`` each named session store is run in turn with two server processes sharing it
(the SQLite database in one data folder, or a ``redis-server`` started for the run), the students
split between them, and the figures of every store are printed side by side at the end.

Targets for a classroom: zero errors, p99 under 250 ms, memory flat after warm-up. Timings depend
on the machine and on what else runs on it, so each kind of request is also timed alone on the
same server before the load starts, and the report gives p99 under load as a ratio of that.

Request patterns (``--pattern``): ``json`` asks as an API client does (JSON, every field);
``page`` asks as the page does (safetensors with the page's default fields,
``serving.PAGE_QUERY``). ``--compare`` runs the same load three times in one run -- the code in
``--baseline DIR`` (a checkout from before a change) with JSON, then this code with JSON and with
the page's pattern -- and prints each report and the throughput ratios to the first:

    python bench/load.py --students 20 --think 0 --duration 20 --compare --rounds 3 \
        --baseline /tmp/main
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded by the tests
from serving import (  # noqa: E402,F401 (free_port: for the tests)
    PAGE_QUERY,
    PROJECT_ROOT,
    RedisServer,
    Server,
    free_port,
)

KINDS = ("create", "trace", "step", "upload")
STORES = ("sqlite", "redis")
STORE_WORKERS = 2  # server processes sharing the store when --store is given
DEFAULT_MIX = {"trace": 4, "step": 4, "upload": 2}
MNIST_TRAIN_SIZE = 9000
PATTERNS = {"json": {}, "page": PAGE_QUERY}


@dataclass
class LoadReport:
    students: int
    duration: float
    requests: int
    latencies: dict[str, list[float]]
    errors: list[str]
    rss_samples: list[tuple[float, int]]
    warmup_seconds: float
    server_exit_code: int | None = None
    alone: dict[str, float] = field(default_factory=dict)  # median seconds, one request at a time
    notes: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.requests / self.duration if self.duration > 0 else 0.0

    def percentile(self, kind: str, q: float) -> float | None:
        values = self.latencies.get(kind) or []
        return float(np.percentile(values, q)) if values else None

    def rss(self) -> dict[str, int | None]:
        """Resident memory in KiB: at start, after warm-up, peak, end."""
        if not self.rss_samples:
            return {"start": None, "after_warmup": None, "peak": None, "end": None}
        t0 = self.rss_samples[0][0]
        after = [kib for t, kib in self.rss_samples if t - t0 >= self.warmup_seconds]
        return {
            "start": self.rss_samples[0][1],
            "after_warmup": after[0] if after else None,
            "peak": max(kib for _, kib in self.rss_samples),
            "end": self.rss_samples[-1][1],
        }

    def rss_timeline(self, points: int = 10) -> list[int]:
        """Resident memory in KiB at each tenth of the run (the last sample at or before it)."""
        if not self.rss_samples:
            return []
        t0, t_end = self.rss_samples[0][0], self.rss_samples[-1][0]
        timeline = []
        for point in range(1, points + 1):
            moment = t0 + (t_end - t0) * point / points
            timeline.append([kib for t, kib in self.rss_samples if t <= moment][-1])
        return timeline

    def as_dict(self) -> dict:
        return {
            "students": self.students,
            "duration_s": round(self.duration, 2),
            "requests": self.requests,
            "throughput_rps": round(self.throughput, 2),
            "latency_ms": {
                kind: {
                    "count": len(self.latencies.get(kind) or []),
                    "p50": _ms(self.percentile(kind, 50)),
                    "p99": _ms(self.percentile(kind, 99)),
                    "max": _ms(max(self.latencies[kind]) if self.latencies.get(kind) else None),
                    "alone": _ms(self.alone.get(kind)),
                    "p99_over_alone": _ratio(self.percentile(kind, 99), self.alone.get(kind)),
                }
                for kind in KINDS
            },
            "errors": len(self.errors),
            "error_samples": self.errors[:10],
            "rss_kib": self.rss(),
            "rss_kib_each_tenth": self.rss_timeline(),
            "server_exit_code": self.server_exit_code,
            "notes": self.notes,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _ratio(loaded: float | None, alone: float | None) -> float | None:
    return None if not loaded or not alone else round(loaded / alone, 1)


def read_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def digit_pictures(count: int, rng: random.Random) -> list[bytes]:
    """PNGs of shipped MNIST digits as a student would upload them: dark ink on white, 140 px."""
    with np.load(PROJECT_ROOT / "engine" / "data" / "mnist-10k.npz") as data:
        images = data["images"]
    pictures = []
    for _ in range(count):
        digit = 255 - images[rng.randrange(len(images))]
        picture = Image.fromarray(digit).resize((140, 140), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        pictures.append(buffer.getvalue())
    return pictures


class Student(threading.Thread):
    def __init__(self, number: int, run: "LoadRun") -> None:
        super().__init__(name=f"student-{number}", daemon=True)
        self.number = number
        self.run_state = run
        self.rng = random.Random(number)

    def run(self) -> None:
        state = self.run_state
        url = state.urls[self.number % len(state.urls)]
        with httpx.Client(base_url=url, timeout=state.request_timeout) as client:
            created = state.request(client, "create", "POST", "/api/sessions",
                                    json={"preset": state.preset, "seed": self.rng.randrange(1000)})
            if created is None:
                return
            path = f"/api/sessions/{created.json()['id']}"
            kinds = list(state.mix)
            weights = [state.mix[k] for k in kinds]
            while state.keep_going():
                kind = self.rng.choices(kinds, weights)[0]
                if kind == "trace":
                    index = self.rng.randrange(MNIST_TRAIN_SIZE)
                    state.request(client, "trace", "POST", f"{path}/trace", params=state.query,
                                  json={"input": {"dataset": "mnist", "index": index}})
                elif kind == "step":
                    state.request(client, "step", "POST", f"{path}/step", params=state.query,
                                  json={"batch_size": 32, "learning_rate": 0.05,
                                        "optimizer": "sgd"})
                else:
                    picture = self.rng.choice(state.pictures)
                    state.request(client, "upload", "POST", "/api/images",
                                  files={"file": ("digit.png", picture, "image/png")})
                if state.think > 0:
                    time.sleep(self.rng.uniform(0, 2 * state.think))
            try:
                client.delete(path)
            except httpx.HTTPError:
                pass


class LoadRun:
    def __init__(self, url: str, *, students: int, duration: float, max_requests: int,
                 preset: str, think: float, mix: dict[str, int], request_timeout: float,
                 query: dict[str, str] | None = None,
                 other_urls: tuple[str, ...] = ()) -> None:
        self.url = url
        self.urls = (url, *other_urls)  # students are spread over these servers
        self.query = query or {}
        self.students = students
        self.duration = duration
        self.max_requests = max_requests
        self.preset = preset
        self.think = think
        self.mix = mix
        self.request_timeout = request_timeout
        self.pictures = digit_pictures(16, random.Random(0))
        self.latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
        self.errors: list[str] = []
        self.count = 0
        self.mutex = threading.Lock()
        self.deadline = 0.0

    def keep_going(self) -> bool:
        with self.mutex:
            return time.monotonic() < self.deadline and self.count < self.max_requests

    def request(self, client: httpx.Client, kind: str, method: str, path: str, **kwargs):
        started = time.perf_counter()
        try:
            response = client.request(method, path, **kwargs)
            response.read()
        except httpx.HTTPError as error:
            self._record(kind, time.perf_counter() - started, f"{kind} {path}: {error!r}")
            return None
        elapsed = time.perf_counter() - started
        if response.status_code >= 400:
            self._record(kind, elapsed,
                         f"{kind} {path}: {response.status_code} {response.text[:200]}")
            return None
        self._record(kind, elapsed, None)
        return response

    def _record(self, kind: str, elapsed: float, error: str | None) -> None:
        with self.mutex:
            self.count += 1
            self.latencies[kind].append(elapsed)
            if error is not None:
                self.errors.append(error)

    def warm_up(self, repeats: int = 5) -> dict[str, float]:
        """Warm the server up, then time each kind of request alone (median of ``repeats``):
        the reference the loaded latencies are compared with, measured in the same run on the
        same machine. Nothing here is counted in the load figures."""
        alone: dict[str, list[float]] = {kind: [] for kind in KINDS}
        with httpx.Client(base_url=self.url, timeout=self.request_timeout) as client:
            def timed(kind: str, method: str, path: str, **kwargs) -> httpx.Response:
                started = time.perf_counter()
                response = client.request(method, path, **kwargs)
                response.raise_for_status()
                alone[kind].append(time.perf_counter() - started)
                return response

            # the first round loads the MNIST sample and fills caches: not part of the reference
            for round_ in range(repeats + 1):
                created = timed("create", "POST", "/api/sessions", json={"preset": self.preset})
                path = f"/api/sessions/{created.json()['id']}"
                timed("trace", "POST", f"{path}/trace", params=self.query,
                      json={"input": {"dataset": "mnist", "index": round_}})
                timed("step", "POST", f"{path}/step", params=self.query, json={"batch_size": 32})
                timed("upload", "POST", "/api/images",
                      files={"file": ("d.png", self.pictures[round_ % len(self.pictures)],
                                      "image/png")})
                client.delete(path)
        return {kind: float(np.median(values[1:])) for kind, values in alone.items()}

    def execute(self) -> float:
        self.deadline = time.monotonic() + self.duration
        started = time.monotonic()
        threads = [Student(n, self) for n in range(self.students)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.duration + 4 * self.request_timeout)
        return time.monotonic() - started


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            kib = read_rss_kib(self.pid)
            if kib is not None:
                self.samples.append((time.monotonic(), kib))
            self.stopped.wait(self.interval)

    def stop(self) -> list[tuple[float, int]]:
        self.stopped.set()
        self.join()
        return self.samples


def run_load(*, students: int = 20, duration: float = 60.0, max_requests: int = 50_000,
             preset: str = "lenet5", think: float = 0.5, mix: dict[str, int] | None = None,
             request_timeout: float = 30.0, warmup_fraction: float = 0.2,
             server_env: dict[str, str] | None = None, pattern: str = "json",
             root: Path = PROJECT_ROOT, store: str | None = None) -> LoadReport:
    """Start a server (of the checkout at ``root``), run the load against it with the request
    ``pattern`` (a key of ``PATTERNS``), stop it, and report. With ``store`` (one of
    ``STORES``), ``STORE_WORKERS`` servers share that session store and the students."""
    with tempfile.TemporaryDirectory(prefix="cnnviz-load-") as data_dir, \
            contextlib.ExitStack() as redis_running:
        env = dict(server_env or {})
        if store is not None:
            env["CNNVIZ_SESSION_STORE"] = store
            if store == "redis":
                redis = redis_running.enter_context(RedisServer(Path(data_dir) / "redis"))
                env["CNNVIZ_REDIS_URL"] = redis.url
        servers = [Server(Path(data_dir), env, root=root)
                   for _ in range(STORE_WORKERS if store is not None else 1)]
        server = servers[0]
        for each in servers:
            each.start()
        sampler = RssSampler(server.process.pid)
        sampler.start()
        try:
            load = LoadRun(server.url, students=students, duration=duration,
                           max_requests=max_requests, preset=preset, think=think,
                           mix=mix or DEFAULT_MIX, request_timeout=request_timeout,
                           query=PATTERNS[pattern],
                           other_urls=tuple(each.url for each in servers[1:]))
            alone = load.warm_up()
            for other in servers[1:]:  # its first trace loads the MNIST sample: not under load
                LoadRun(other.url, students=0, duration=0, max_requests=0, preset=preset,
                        think=0, mix=DEFAULT_MIX, request_timeout=request_timeout).warm_up(1)
            elapsed = load.execute()
        finally:
            samples = sampler.stop()
            exit_code = server.stop()
            for other in servers[1:]:
                other.stop()
        report = LoadReport(
            students=students, duration=elapsed, requests=load.count,
            latencies=load.latencies, errors=load.errors, rss_samples=samples,
            warmup_seconds=duration * warmup_fraction, server_exit_code=exit_code,
            alone=alone,
        )
        if store is not None:
            report.notes.append(f"store {store}: {len(servers)} server processes share it and "
                                "the students; server RSS is the first one's")
        for each in servers:
            log = each.output().strip()
            if log:
                report.notes.append(f"server log (last 2000 chars): {log[-2000:]}")
        return report


def format_store_comparison(reports: dict[str, LoadReport]) -> str:
    """Throughput and p99 per kind of request for each store, and each as a ratio of the first
    store's figures (measured in the same run)."""
    first = next(iter(reports.values()))
    width = max(len("run"), *(len(label) for label in reports)) + 2
    lines = [f"{'run':<{width}}{'req/s':>9}{'ratio':>7}" + "".join(
        f"{kind + ' p99 ms':>16}{'ratio':>7}" for kind in KINDS) + f"{'errors':>8}"]
    for label, report in reports.items():
        row = f"{label:<{width}}{report.throughput:>9.1f}"
        row += _cell(_ratio(report.throughput, first.throughput), 7)
        for kind in KINDS:
            p99 = report.percentile(kind, 99)
            row += _cell(_ms(p99), 16) + _cell(_ratio(p99, first.percentile(kind, 99)), 7)
        lines.append(row + f"{len(report.errors):>8}")
    return "\n".join(lines)


def format_report(report: LoadReport) -> str:
    data = report.as_dict()
    lines = [
        f"students {data['students']}, {data['duration_s']} s, {data['requests']} requests, "
        f"{data['throughput_rps']} requests/s, errors {data['errors']}",
        f"{'kind':<8}{'count':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'alone ms':>10}"
        f"{'p99/alone':>11}",
    ]
    for kind, row in data["latency_ms"].items():
        lines.append(f"{kind:<8}{row['count']:>8}{_cell(row['p50'])}{_cell(row['p99'])}"
                     f"{_cell(row['max'])}{_cell(row['alone'])}{_cell(row['p99_over_alone'], 11)}")
    rss = data["rss_kib"]
    lines.append(
        "server RSS MiB: start {} / after warm-up {} / peak {} / end {}".format(
            *(f"{rss[k] / 1024:.1f}" if rss[k] else "?"
              for k in ("start", "after_warmup", "peak", "end"))
        )
    )
    lines.append("server RSS MiB at each tenth of the run: " + " ".join(
        f"{kib / 1024:.0f}" for kib in data["rss_kib_each_tenth"]))
    lines.extend(f"error: {e}" for e in data["error_samples"])
    lines.extend(data["notes"])
    return "\n".join(lines)


def _cell(value: float | None, width: int = 10) -> str:
    return f"{value:>{width}.1f}" if value is not None else f"{'-':>{width}}"


def parse_mix(text: str) -> dict[str, int]:
    mix = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        if kind not in DEFAULT_MIX or not weight.isdigit():
            raise argparse.ArgumentTypeError(
                f"mix entries are kind=weight with kind in {sorted(DEFAULT_MIX)}")
        mix[kind] = int(weight)
    if not any(mix.values()):
        raise argparse.ArgumentTypeError("at least one weight must be positive")
    return mix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--max-requests", type=int, default=50_000,
                        help="stop after this many requests")
    parser.add_argument("--preset", default="lenet5")
    parser.add_argument("--think", type=float, default=0.5,
                        help="mean seconds a student waits between clicks (0: hammer)")
    parser.add_argument("--mix", type=parse_mix, default=DEFAULT_MIX,
                        help="relative weights, e.g. trace=4,step=4,upload=2")
    parser.add_argument("--pattern", choices=sorted(PATTERNS), default="json",
                        help="json: as an API client asks; page: as the page asks "
                             "(safetensors, the page's default fields)")
    parser.add_argument("--compare", action="store_true",
                        help="run --baseline with json, then this code with json and page")
    parser.add_argument("--baseline", type=Path, help="a checkout of the code before a change")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --compare or several --store: run them in turn this often "
                             "(ABCABC...) and compare median throughputs, so a burst of load "
                             "elsewhere on the machine does not decide the comparison")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--store", action="append", choices=STORES,
                        help=f"session store to load, with {STORE_WORKERS} server processes "
                             "sharing it; repeat to compare stores in one run")
    args = parser.parse_args(argv)
    if args.compare and not args.baseline:
        parser.error("--compare needs --baseline DIR (a checkout of the code before)")
    if args.compare and args.store:
        parser.error("--compare and --store are separate comparisons; give one of them")
    if args.store:
        runs = [(f"store {store}, {args.pattern}", PROJECT_ROOT, args.pattern, store)
                for store in dict.fromkeys(args.store)]
    elif args.compare:
        runs = [("before (baseline), json", args.baseline.resolve(), "json", None),
                ("this code, json", PROJECT_ROOT, "json", None),
                ("this code, page", PROJECT_ROOT, "page", None)]
    else:
        runs = [(f"this code, {args.pattern}", PROJECT_ROOT, args.pattern, None)]
    reports = []
    for round_ in range(1, (args.rounds if len(runs) > 1 else 1) + 1):
        for label, root, pattern, store in runs:
            report = run_load(students=args.students, duration=args.duration,
                              max_requests=args.max_requests, preset=args.preset,
                              think=args.think, mix=args.mix, pattern=pattern, root=root,
                              store=store)
            reports.append((label, report))
            if args.json:
                print(json.dumps({"run": label, "round": round_, **report.as_dict()}, indent=2))
            else:
                print(f"=== round {round_}: {label}\n{format_report(report)}")
    if len(runs) > 1:
        medians = {label: float(np.median([r.throughput for name, r in reports if name == label]))
                   for label, *_ in runs}
        reference = medians[runs[0][0]]
        print(f"=== throughput (requests/s, median of {args.rounds} round(s)) and ratio to the "
              "first")
        for label, *_ in runs:
            each = " ".join(f"{r.throughput:.1f}" for name, r in reports if name == label)
            errors = sum(len(r.errors) for name, r in reports if name == label)
            print(f"{label:<28}{medians[label]:8.2f}{medians[label] / reference:8.2f}x"
                  f"   rounds: {each}   errors {errors}")
    if args.store and not args.json:
        print("=== stores side by side (last round): p99 per kind of request, ratio to the first "
              "store")
        print(format_store_comparison({label: report for label, report in reports}))
    return 0 if not any(report.errors for _, report in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
