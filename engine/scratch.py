"""Reusable scratch memory for the fast kernels' temporaries.

One trace of LeNet-5 at batch 64 makes tens of megabytes of temporaries (padded copies, im2col
matrices and their gradients) that die inside the trace. Allocations that large are handed back to
the operating system when freed, so the next trace faults every page in again, which costs about
as much as the arithmetic. A Scratch keeps those buffers per thread and per slot (a layer's position
in its network) and hands out views of them, so traces of the same shapes reuse memory that is
already mapped. Arrays that a trace returns or keeps are never scratch.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

try:  # optional: without it the BLAS keeps whatever thread count it was given
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - installed with the project
    ThreadpoolController = None

Take = Callable[..., np.ndarray]  # (name, shape, dtype, zeroed=False) -> array

# A thread keeps at most this much scratch between passes: LeNet-5 at batch 256 needs about 85 MB.
RETAIN_BYTES = 128 * 2**20


def fresh(name: str, shape: tuple, dtype, zeroed: bool = False) -> np.ndarray:
    """The allocation used when a kernel is called without scratch: a new array every time."""
    return np.zeros(shape, dtype=dtype) if zeroed else np.empty(shape, dtype=dtype)


class Scratch:
    def __init__(self) -> None:
        self._local = threading.local()

    def _buffers(self) -> dict:
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        return buffers

    def take(self, slot, name: str, shape: tuple, dtype, zeroed: bool = False) -> np.ndarray:
        """An uninitialised array of `shape` and `dtype`, valid until the same (slot, name, dtype)
        is taken again on this thread.

        zeroed: a newly allocated buffer is zero-filled (a reused one holds what was left in it).
        A kernel that always writes the same positions of a buffer and needs zeros elsewhere asks
        for this under a name that spells out that layout, and never zeroes it again. The dtype is
        part of the key because it is part of that layout: float64 rows written into a buffer
        later read as float32 would land in the other dtype's zero margins."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        buffers = self._buffers()
        key = (slot, name, dtype)
        buffer = buffers.get(key)
        if buffer is None or buffer.nbytes < nbytes:
            allocate = np.zeros if zeroed else np.empty
            buffer = buffers[key] = allocate(max(nbytes, 1), dtype=np.uint8)
        return buffer[:nbytes].view(dtype).reshape(shape)

    def taker(self, slot) -> Take:
        """take() bound to one slot, the form the kernels accept."""
        return lambda name, shape, dtype, zeroed=False: self.take(slot, name, shape, dtype, zeroed)

    def nbytes(self) -> int:
        """Bytes held by this thread's buffers."""
        return sum(buffer.nbytes for buffer in self._buffers().values())

    def clear(self) -> None:
        """Release this thread's buffers."""
        self._buffers().clear()

    def trim(self, max_bytes: int = RETAIN_BYTES) -> None:
        """Release this thread's buffers if together they hold more than max_bytes, so that one
        huge batch does not pin its temporaries to a server thread for good."""
        if self.nbytes() > max_bytes:
            self.clear()


SCRATCH = Scratch()


# --- the C allocator -------------------------------------------------------------------------------
#
# Scratch covers the temporaries; the arrays a trace returns must be new every time. glibc's malloc
# serves a large request with a fresh mmap (and unmaps it when freed) once the request passes a
# threshold it moves at run time, and it hands free memory at the top of its heap back to the system
# past a trim threshold. Either way the next trace touches pages the kernel must fault in again,
# about 2,000 faults for one batch-64 LeNet-5 trace depending on what ran before. Fixing both
# thresholds keeps freed trace arrays in the heap for the next trace. The cost is bounded: at most
# TRIM_THRESHOLD_BYTES of free memory stays at the top of each malloc arena (one per thread that
# allocates, up to glibc's limit), and requests above MMAP_THRESHOLD_BYTES are still mapped and
# unmapped directly.

MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD_BYTES = 64 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers from glibc's malloc.h
_ALLOCATOR_SETTINGS = {  # what glibc reads from the environment for each, if the user has set it
    _M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD_BYTES),
    _M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", TRIM_THRESHOLD_BYTES),
}


def keep_freed_memory_for_reuse() -> bool:
    """Fix glibc malloc's mmap and trim thresholds (above) for this process; True if both are set.

    Does nothing, and returns False, off Linux, on another C library, or for a threshold the user
    has already chosen in the environment (theirs wins). Never raises: it is an optimisation only.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing useful
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    all_set = True
    for parameter, (variable, value) in _ALLOCATOR_SETTINGS.items():
        if variable in os.environ:
            all_set = False
            continue
        all_set &= mallopt(parameter, value) == 1  # mallopt returns 1 on success
    return all_set


ALLOCATOR_TUNED = keep_freed_memory_for_reuse()



# --- threads ---------------------------------------------------------------------------------------
#
# The engine's matrix products are small and skinny: a second OpenBLAS thread barely speeds them up,
# and on a loaded machine OpenBLAS's threads, waiting for a core, made a two-thread trace several
# times slower than a one-thread one. So a decorated pass (Network.trace, forward, batch_loss) runs
# its products on one BLAS thread, and when the caller had allowed more it deals the batch over that
# many Python threads instead (NumPy releases the GIL in its loops and products): in blocks through
# every layer for a big batch (network.py), else the fast kernels' chunks. When the BLAS is already
# at one thread -- the server's one-thread-per-request rule, app/__init__.py -- nothing is changed
# and everything runs on the calling thread.

_blas_controllers_found = None
_blas_lookup_lock = threading.Lock()
_pass_threads = threading.local()
_worker_pool = None
# When the calling thread had to wait for the pool longer than it worked itself, the pool's threads
# are not getting a core (other processes hold them): for this long, passes run as on one thread
# (kernel_threads() is 1: no blocks, no chunks split for threads) rather than wait for them again.
# The next pass after it tries the pool once more.
POOL_BACKOFF_SECONDS = 1.0
_pool_backoff_until = 0.0
# A pool thread that ran on a core for less than this share of the time it spent on its items (over
# at least POOL_STARVED_MIN_SECONDS) shared its core with other processes: the same back-off. (A
# thread with a core of its own runs all the time but for waits on the interpreter lock; with the
# machine's load average at 6 the pool thread measured a median share of 0.42 on batch-256 blocks.)
POOL_STARVED_CPU_SHARE = 0.6
POOL_STARVED_MIN_SECONDS = 5e-4


def _blas_controllers() -> list:
    global _blas_controllers_found
    if _blas_controllers_found is None:
        with _blas_lookup_lock:
            if _blas_controllers_found is None:
                _blas_controllers_found = ([] if ThreadpoolController is None else
                                           list(ThreadpoolController().select(user_api="blas").lib_controllers))
    return _blas_controllers_found


def kernel_threads() -> int:
    """How many threads the fast kernels may split a batch over in the current pass (1 outside one,
    and while the pool is backed off: then a pass is exactly what it is on one thread)."""
    count = getattr(_pass_threads, "count", 1)
    return 1 if count > 1 and time.monotonic() < _pool_backoff_until else count


@contextlib.contextmanager
def on_calling_thread_only():
    """Within it kernel_threads() is 1: the work runs exactly as in a one-thread pass."""
    previous = getattr(_pass_threads, "count", 1)
    _pass_threads.count = 1
    try:
        yield
    finally:
        _pass_threads.count = previous


def worker_pool() -> ThreadPoolExecutor:
    """The process's pool for kernels' chunks; its threads keep their own scratch between passes."""
    global _worker_pool
    if _worker_pool is None:
        with _blas_lookup_lock:
            if _worker_pool is None:
                _worker_pool = ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1),
                                                  thread_name_prefix="engine-kernel")
    return _worker_pool


def over_threads(job, items, threads: int | None = None) -> list:
    """The results of job(group) over groups of consecutive items covering them all, in item order.

    On one thread (`threads`, default kernel_threads()), job(items) alone. On more, job([item]) for
    each item, the items taken one at a time and in order by the calling thread and threads - 1
    pool threads alike until none are left: a pool thread that gets no core (a loaded machine)
    leaves its share to the calling thread instead of holding the pass up (and when one held it up
    anyway, longer than the calling thread worked, passes keep to the calling thread for
    POOL_BACKOFF_SECONDS). The results, summed in item order by the callers, are the same numbers
    whichever thread made each. Inside a job kernel_threads() is 1: a job never deals its own work
    out again. Each thread takes its temporaries from its own scratch; jobs must write disjoint
    parts of their results."""
    global _pool_backoff_until
    workers = min(kernel_threads() if threads is None else threads, len(items)) - 1
    if workers <= 0 or time.monotonic() < _pool_backoff_until:
        return [job(items)]
    results = [None] * len(items)
    positions = iter(range(len(items)))
    taking = threading.Lock()

    def next_position():
        with taking:
            return next(positions, None)

    def take_until_done(trim: bool) -> tuple[float, float]:
        """(seconds of this thread's CPU time, seconds of wall time) spent on the items it took."""
        cpu = wall = 0.0
        try:
            while (position := next_position()) is not None:
                started_cpu, started_wall = time.thread_time(), time.monotonic()
                results[position] = job(items[position: position + 1])
                cpu += time.thread_time() - started_cpu
                wall += time.monotonic() - started_wall
        finally:
            if trim:  # a pool thread's scratch: nothing else trims it
                SCRATCH.trim()
        return cpu, wall

    others = [worker_pool().submit(take_until_done, True) for _ in range(workers)]
    started = time.monotonic()
    try:
        with on_calling_thread_only():  # a job never deals its own work out again
            take_until_done(False)
    except BaseException:
        while next_position() is not None:  # leave the pool threads nothing more to start
            pass
        raise
    worked = time.monotonic() - started
    starved = False
    for other in others:
        if not other.cancel():  # one that has not started (the pool is busy elsewhere) has nothing left to do
            cpu, wall = other.result()
            starved |= wall > POOL_STARVED_MIN_SECONDS and cpu < POOL_STARVED_CPU_SHARE * wall
    if starved or time.monotonic() - started > 2 * worked:
        _pool_backoff_until = time.monotonic() + POOL_BACKOFF_SECONDS
    return results


def on_one_blas_thread(method):
    """Run `method` with the BLAS on one thread and the kernels on as many threads as the BLAS had."""

    @functools.wraps(method)
    def run(*args, **kwargs):
        raised = [(lib, lib.get_num_threads() or 1) for lib in _blas_controllers()]
        raised = [(lib, count) for lib, count in raised if count > 1]
        if not raised:
            return method(*args, **kwargs)
        previous = kernel_threads()
        for lib, _ in raised:
            lib.set_num_threads(1)
        # threadpoolctl lets one thread at a time set OpenBLAS's process-wide count; if another one
        # holds it, keep to one kernel thread rather than stack threads on threads
        taken = all((lib.get_num_threads() or 1) == 1 for lib, _ in raised)
        _pass_threads.count = max(count for _, count in raised) if taken else 1
        try:
            return method(*args, **kwargs)
        finally:
            _pass_threads.count = previous
            for lib, count in raised:
                lib.set_num_threads(count)
                release = getattr(type(lib), "clear_controlling_thread", None)  # OpenBLAS's only
                if release is not None:
                    release()  # only clears it if this thread took it

    return run
