"""Scratch buffers are kept per dtype: a float64 network and a float32 one with the same layer
layout, traced one after the other on one thread, both match a fresh computation."""

from __future__ import annotations

import numpy as np

from engine import Network
from engine.scratch import SCRATCH


def _spec(dtype: str) -> dict:
    # stride 1, small maps: the "wide rows" conv whose backward keeps zero margins in scratch
    return {"input_shape": [2, 10, 11], "dtype": dtype, "seed": 3, "loss": "mse",
            "layers": [{"type": "conv", "filters": 2, "kernel": 2, "activation": "tanh"},
                       {"type": "flatten"}, {"type": "dense", "units": 3}]}


def test_a_float32_trace_after_a_float64_one_matches_a_fresh_one():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 2, 10, 11)), rng.normal(size=(2, 3))
    single = Network.from_spec(_spec("float32"))
    SCRATCH.clear()
    fresh = single.trace(x.astype(np.float32), y)
    double = Network.from_spec(_spec("float64"))
    double.load_state_dict({k: v.astype(np.float64) for k, v in single.state_dict().items()})
    for _ in range(2):
        double.trace(x, y)
        again = single.trace(x.astype(np.float32), y)
        np.testing.assert_array_equal(again.input_grad, fresh.input_grad)
        np.testing.assert_array_equal(again.layers[0].grads["W"], fresh.layers[0].grads["W"])
