"""app/tensor_file.py writes files the reference ``safetensors`` package reads back exactly."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from safetensors.numpy import load

from app.tensor_file import encode_safetensors


def test_reference_reader_gets_every_tensor_back_bit_for_bit():
    rng = np.random.default_rng(0)
    tensors = {
        "layers.0.z": rng.standard_normal((6, 28, 28)).astype(np.float32),
        "layers.1.argmax": rng.integers(0, 784, (6, 14, 14)).astype(np.int32),
        "loss64": np.array(2.5, dtype=np.float64),
        "pixels": rng.integers(0, 255, (3, 5)).astype(np.uint8),
        "big.endian": np.arange(5, dtype=">f4"),
    }
    data = encode_safetensors(tensors, {"json": '{"loss": 2.5}'})
    loaded = load(data)
    assert set(loaded) == set(tensors)
    for name, value in tensors.items():
        assert loaded[name].shape == value.shape
        np.testing.assert_array_equal(loaded[name], value)


def test_every_tensor_starts_at_a_multiple_of_its_item_size_and_metadata_is_kept():
    tensors = {"a": np.ones(3, np.int32), "b": np.ones(1, np.float64), "c": np.ones(2, np.uint8),
               "d": np.ones((2, 2), np.float32)}
    data = encode_safetensors(tensors, {"json": "{}"})
    (header_length,) = struct.unpack("<Q", data[:8])
    assert header_length % 8 == 0
    header = json.loads(data[8:8 + header_length])
    assert header.pop("__metadata__") == {"json": "{}"}
    data_start = 8 + header_length
    for name, entry in header.items():
        begin, _ = entry["data_offsets"]
        assert (data_start + begin) % tensors[name].dtype.itemsize == 0, name


def test_an_unsupported_dtype_is_refused_by_name():
    with pytest.raises(TypeError, match="complex"):
        encode_safetensors({"x": np.ones(2, np.complex64)})


def test_a_layout_seen_before_still_takes_each_call_s_own_arrays_as_they_are():
    # the second call has the first's names, shapes and dtypes (a layout worked out once), but
    # other values, a non-contiguous array and a big-endian one with a native one's name swapped
    rng = np.random.default_rng(1)
    first = {"w": rng.standard_normal((4, 3)).astype(np.float32), "n": np.arange(3, dtype=np.int32)}
    second = {"w": rng.standard_normal((3, 8)).astype(np.float32).T[:, ::2],
              "n": np.array([7, 8, 9], np.int32)}
    third = {"w": rng.standard_normal((4, 3)).astype(">f4"), "n": np.arange(3, dtype=">i4")}
    for tensors in (first, second, third, first):
        loaded = load(encode_safetensors(tensors, {"json": "{}"}))
        for name, value in tensors.items():
            np.testing.assert_array_equal(loaded[name], value)
