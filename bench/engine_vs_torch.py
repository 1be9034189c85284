"""LeNet-5 trace (forward + backward, every intermediate kept) in float32: the engine against the
same network in PyTorch CPU, timed in the same run.

For each thread count (both libraries get the same: `torch.set_num_threads(n)` and numpy's BLAS
limited to n through threadpoolctl) and each batch size it prints the median time of the engine's
`net.trace(x, y)` and of PyTorch's forward + backward with `retain_grad()` on every layer's z and a
and on the input (so PyTorch also keeps every intermediate and dL/dx), and the ratio
ours / PyTorch. The server runs the engine with one BLAS thread (app/__init__.py). The two are timed alternately,
repeat by repeat, so that load from other processes hits both alike. Then it prints the peak of
numpy's allocations during one batch-256 trace, measured with tracemalloc (numpy reports its array
buffers to tracemalloc; the interpreter's own baseline is not included).

    python bench/engine_vs_torch.py
    python bench/engine_vs_torch.py --batches 1 64 --repeats 50 --threads 1

Targets: ratio at most 1.0 at batch 1 and at most 1.5 at batch 64; peak under 300 MB.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import Network  # noqa: E402
from engine.architectures import lenet5  # noqa: E402
from engine.scratch import SCRATCH  # noqa: E402

LENET5 = lenet5(dtype="float32")

TARGETS = {1: 1.0, 64: 1.5}
PEAK_TARGET_MB = 300.0


class TorchLeNet:
    """The same LeNet-5 in PyTorch, weights copied from the engine's params."""

    def __init__(self, params):
        self.weights = [{k: torch.tensor(v.copy(), requires_grad=True) for k, v in p.items()} for p in params]

    def trace(self, x: torch.Tensor, y: torch.Tensor):
        for p in self.weights:
            for value in p.values():
                value.grad = None
        x = x.detach().requires_grad_(True)
        kept = [x]
        w = self.weights
        z1 = F.conv2d(x, w[0]["W"], w[0]["b"], padding=2)
        a1 = torch.relu(z1)
        p1 = F.max_pool2d(a1, 2, 2)
        z2 = F.conv2d(p1, w[2]["W"], w[2]["b"])
        a2 = torch.relu(z2)
        p2 = F.max_pool2d(a2, 2, 2)
        flat = p2.reshape(p2.shape[0], -1)
        z3 = F.linear(flat, w[5]["W"], w[5]["b"])
        a3 = torch.relu(z3)
        z4 = F.linear(a3, w[6]["W"], w[6]["b"])
        a4 = torch.relu(z4)
        z5 = F.linear(a4, w[7]["W"], w[7]["b"])
        a5 = torch.softmax(z5, dim=1)
        intermediates = [z1, a1, p1, z2, a2, p2, flat, z3, a3, z4, a4, z5, a5]
        for tensor in intermediates:
            tensor.retain_grad()
        loss = F.nll_loss(torch.log_softmax(z5, dim=1), y)
        loss.backward()
        return float(loss.detach()), kept + intermediates


def median_times(batch: int, repeats: int, warmup: int = 3) -> tuple[float, float]:
    rng = np.random.default_rng(batch)
    x = rng.uniform(0, 1, size=(batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=batch)
    net = Network.from_spec(LENET5)
    reference = TorchLeNet(net.params)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    ours_loss, theirs_loss = net.trace(x, y).loss, reference.trace(xt, yt)[0]
    if abs(ours_loss - theirs_loss) > 1e-4 * max(1.0, abs(theirs_loss)):
        raise SystemExit(f"batch {batch}: the two networks disagree: loss {ours_loss} vs {theirs_loss}")
    for _ in range(warmup):
        net.trace(x, y)
        reference.trace(xt, yt)
    ours, theirs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        net.trace(x, y)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference.trace(xt, yt)
        theirs.append(time.perf_counter() - start)
    return statistics.median(ours), statistics.median(theirs)


def peak_trace_megabytes(batch: int = 256) -> tuple[float, float]:
    """(peak MB of numpy allocations during one batch-256 trace, MB of it that is reusable scratch).

    The scratch buffers are released first, so the peak includes them, as on a first trace."""
    net = Network.from_spec(LENET5)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=batch)
    SCRATCH.clear()
    gc.collect()
    tracemalloc.start()
    trace = net.trace(x, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del trace
    return peak / 2**20, SCRATCH.nbytes() / 2**20


def main(argv=None) -> int:
    default_threads = torch.get_num_threads()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, default_threads}),
                        help="thread counts to run, each for both libraries (default: 1 and torch's default)")
    parser.add_argument("--repeats", type=int, default=0, help="repeats per batch (default: by batch size)")
    args = parser.parse_args(argv)

    print(f"torch {torch.__version__} (default torch.get_num_threads() = {default_threads}), numpy {np.__version__}, "
          f"cpus = {os.cpu_count()}; times are medians, ours and torch's alternating in one process")
    met = True
    for threads in args.threads:
        torch.set_num_threads(threads)
        with threadpool_limits(limits=threads, user_api="blas"):
            print(f"threads = {threads} (torch.get_num_threads() = {torch.get_num_threads()}, numpy BLAS {threads})")
            print(f"{'batch':>5}  {'ours (ms)':>10}  {'torch (ms)':>10}  {'ours/torch':>10}  target")
            for batch in args.batches:
                repeats = args.repeats or max(10, min(300, 3000 // batch))
                ours, theirs = median_times(batch, repeats)
                ratio = ours / theirs
                target = TARGETS.get(batch)
                verdict = "" if target is None else f"<= {target}: {'met' if ratio <= target else 'MISSED'}"
                met &= target is None or ratio <= target
                print(f"{batch:>5}  {ours * 1e3:>10.3f}  {theirs * 1e3:>10.3f}  {ratio:>10.2f}  {verdict}")
    torch.set_num_threads(default_threads)
    peak, scratch = peak_trace_megabytes()
    met &= peak < PEAK_TARGET_MB
    print(f"peak of numpy allocations during one batch-256 trace (tracemalloc): {peak:.1f} MB, of which "
          f"{scratch:.1f} MB reusable scratch (target < {PEAK_TARGET_MB:.0f} MB: "
          f"{'met' if peak < PEAK_TARGET_MB else 'MISSED'})")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
