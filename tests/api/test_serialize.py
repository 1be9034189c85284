"""The orjson rendering of NumPy data: valid JSON always, exact float32 values."""

from __future__ import annotations

import json

import numpy as np

from app.serialize import dumps


def test_non_finite_floats_become_null_so_the_json_stays_valid():
    content = {"array": np.array([np.nan, np.inf, -np.inf, 0.5], np.float32),
               "scalar": float("nan"), "numpy_scalar": np.float64(np.inf)}
    parsed = json.loads(dumps(content), parse_constant=_refuse_constant)
    assert parsed == {"array": [None, None, None, 0.5], "scalar": None, "numpy_scalar": None}


def _refuse_constant(constant: str):
    raise AssertionError(f"NaN/Infinity are not JSON, got {constant}")


def test_non_contiguous_arrays_and_numpy_scalars_are_written():
    matrix = np.arange(6, dtype=np.float32).reshape(2, 3)
    parsed = json.loads(dumps({"t": matrix.T, "i": np.int64(7), "f": np.float32(0.25)}))
    assert parsed == {"t": [[0, 3], [1, 4], [2, 5]], "i": 7, "f": 0.25}


def test_float32_values_round_trip_exactly():
    values = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    parsed = np.asarray(json.loads(dumps(values)), dtype=np.float32)
    np.testing.assert_array_equal(parsed, values)
