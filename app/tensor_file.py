"""Arrays as a safetensors file: an 8-byte little-endian header length, a JSON header naming each
tensor's dtype, shape and byte range, then the raw little-endian bytes.

Written here rather than with the ``safetensors`` package so the app needs nothing beyond NumPy
and orjson, which it already uses (the tests read our files with that package). Tensors are laid out largest item size first and the
header is padded to a multiple of 8 bytes, so every tensor starts at an offset that is a multiple
of its item size: a reader (the page's ``DataView``/typed arrays) can view each one in place.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import numpy as np
import orjson

DTYPE_NAMES = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("uint8"): "U8",
}
HEADER_ALIGNMENT = 8


@lru_cache(maxsize=None)
def _little_endian(dtype: np.dtype) -> tuple[np.dtype, str] | None:
    """(the little-endian form of ``dtype``, its safetensors name), or None if it has none.
    Cached: an answer holds dozens of tensors and dtype arithmetic is slow next to them."""
    little = dtype.newbyteorder("<")
    name = DTYPE_NAMES.get(little.newbyteorder("="))
    return None if name is None else (little, name)


def encode_safetensors(tensors: Mapping[str, np.ndarray],
                       metadata: Mapping[str, str] | None = None) -> bytes:
    """The safetensors file holding ``tensors`` (dtypes of ``DTYPE_NAMES`` only) and ``metadata``
    (string to string, stored as the header's ``__metadata__``)."""
    names = list(tensors)
    arrays = [np.asarray(value) for value in tensors.values()]
    layout = _layout(tuple((name, array.shape, array.dtype) for name, array in zip(names, arrays)))
    data = []
    for index in layout.order:
        array = arrays[index]
        if layout.converts[index] or not array.flags.c_contiguous:
            # asarray, not ascontiguousarray: the latter turns a 0-d array (a loss) into shape (1,)
            array = np.asarray(array, dtype=layout.dtypes[index], order="C")
        data.append(array)
    header = orjson.dumps({"__metadata__": {str(key): str(value) for key, value in metadata.items()}}
                          ) if metadata else b"{}"
    if layout.entries != b"{}":  # the two objects' members as one object
        header = header[:-1] + (b"," if metadata else b"") + layout.entries[1:]
    header += b" " * (-len(header) % HEADER_ALIGNMENT)
    # join reads each array's memory in place (buffer protocol): one copy into the file
    return b"".join([struct.pack("<Q", len(header)), header, *data])


@dataclass(frozen=True)
class _Layout:
    entries: bytes  # the header's tensor entries, a JSON object (offsets count from the data)
    order: tuple[int, ...]  # the tensors' positions in the given mapping, in file order
    dtypes: tuple[np.dtype, ...]  # each tensor's dtype in the file (little-endian)
    converts: tuple[bool, ...]  # whether a tensor's dtype is not that already


@lru_cache(maxsize=256)
def _layout(described: tuple[tuple[str, tuple[int, ...], np.dtype], ...]) -> _Layout:
    """Where each tensor of (name, shape, dtype) goes in the file: largest item size first, then
    by name. Cached: a server sends the same layout (a network's trace with the same fields) over
    and over, and working it out tensor by tensor was most of a LeNet-5 trace's encoding."""
    converted = []
    for name, _, dtype in described:
        little = _little_endian(dtype)
        if little is None:
            raise TypeError(f"tensor {name!r}: dtype {dtype} has no safetensors name here")
        converted.append(little)
    order = sorted(range(len(described)),
                   key=lambda i: (-converted[i][0].itemsize, described[i][0]))
    entries = {}
    offset = 0
    for index in order:
        name, shape, _ = described[index]
        little, dtype_name = converted[index]
        end = offset + math.prod(shape) * little.itemsize
        entries[name] = {"dtype": dtype_name, "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    return _Layout(entries=orjson.dumps(entries), order=tuple(order),
                   dtypes=tuple(little for little, _ in converted),
                   converts=tuple(little != dtype for (little, _), (_, _, dtype)
                                  in zip(converted, described)))
