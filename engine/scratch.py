"""Reusable scratch memory for the fast kernels' temporaries.

One trace of LeNet-5 at batch 64 makes tens of megabytes of temporaries (padded copies, im2col
matrices and their gradients) that die inside the trace. Allocations that large are handed back to
the operating system when freed, so the next trace faults every page in again, which costs about
as much as the arithmetic. A Scratch keeps those buffers per thread and per slot (a layer's position
in its network) and hands out views of them, so traces of the same shapes reuse memory that is
already mapped. Arrays that a trace returns or keeps are never scratch.
"""

from __future__ import annotations

import math
import threading
from typing import Callable

import numpy as np

Take = Callable[[str, tuple, np.dtype], np.ndarray]

# A thread keeps at most this much scratch between passes: LeNet-5 at batch 256 needs about 85 MB.
RETAIN_BYTES = 128 * 2**20


def fresh(name: str, shape: tuple, dtype) -> np.ndarray:
    """The allocation used when a kernel is called without scratch: a new array every time."""
    return np.empty(shape, dtype=dtype)


class Scratch:
    def __init__(self) -> None:
        self._local = threading.local()

    def _buffers(self) -> dict:
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        return buffers

    def take(self, slot, name: str, shape: tuple, dtype) -> np.ndarray:
        """An uninitialised array of `shape` and `dtype`, valid until the same (slot, name) is taken
        again on this thread."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        buffers = self._buffers()
        buffer = buffers.get((slot, name))
        if buffer is None or buffer.nbytes < nbytes:
            buffer = buffers[(slot, name)] = np.empty(max(nbytes, 1), dtype=np.uint8)
        return buffer[:nbytes].view(dtype).reshape(shape)

    def taker(self, slot) -> Take:
        """take() bound to one slot, the form the kernels accept."""
        return lambda name, shape, dtype: self.take(slot, name, shape, dtype)

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
