"""Arrays as a safetensors file: an 8-byte little-endian header length, a JSON header naming each
tensor's dtype, shape and byte range, then the raw little-endian bytes.

Written here rather than with the ``safetensors`` package so the app needs nothing beyond NumPy
and orjson, which it already uses (the tests read our files with that package). Tensors are laid out largest item size first and the
header is padded to a multiple of 8 bytes, so every tensor starts at an offset that is a multiple
of its item size: a reader (the page's ``DataView``/typed arrays) can view each one in place.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from operator import itemgetter
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
    entries = []  # (-item size, name, little-endian C-ordered array, dtype name)
    for name, value in tensors.items():
        array = np.asarray(value)
        little = _little_endian(array.dtype)
        if little is None:
            raise TypeError(f"tensor {name!r}: dtype {array.dtype} has no safetensors name here")
        # asarray, not ascontiguousarray: the latter turns a 0-d array (a loss) into shape (1,)
        array = np.asarray(array, dtype=little[0], order="C")
        entries.append((-array.itemsize, name, array, little[1]))
    entries.sort(key=itemgetter(0, 1))

    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(key): str(value) for key, value in metadata.items()}
    offset = 0
    for _, name, array, dtype_name in entries:
        header[name] = {"dtype": dtype_name, "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    header_bytes = orjson.dumps(header)
    header_bytes += b" " * (-len(header_bytes) % HEADER_ALIGNMENT)
    # join reads each array's memory in place (buffer protocol): one copy into the file
    return b"".join([struct.pack("<Q", len(header_bytes)), header_bytes,
                     *(array for _, _, array, _ in entries)])
