"""The two networks DESIGN.md names, as specs: shared by the app's presets, the benchmarks and the
training script. Tests spell them out again on purpose, so that a wrong spec here fails them."""

from __future__ import annotations

from typing import Any


def lenet5(dtype: str = "float32", seed: int = 0) -> dict[str, Any]:
    """conv 6@5x5 pad 2 relu, maxpool 2, conv 16@5x5 relu, maxpool 2, flatten, dense 120 relu,
    dense 84 relu, dense 10 softmax; cross-entropy on a 1x28x28 input."""
    return {
        "input_shape": [1, 28, 28],
        "layers": [
            {"type": "conv", "filters": 6, "kernel": 5, "stride": 1, "padding": 2, "activation": "relu"},
            {"type": "maxpool", "size": 2, "stride": 2},
            {"type": "conv", "filters": 16, "kernel": 5, "stride": 1, "padding": 0, "activation": "relu"},
            {"type": "maxpool", "size": 2, "stride": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 120, "activation": "relu"},
            {"type": "dense", "units": 84, "activation": "relu"},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ],
        "loss": "cross_entropy",
        "dtype": dtype,
        "seed": seed,
    }


def tiny(dtype: str = "float32", seed: int = 0) -> dict[str, Any]:
    """The notes' worked example: 1x6x6 input, conv 2@3x3 relu, maxpool 2, flatten, dense 1
    sigmoid, binary cross-entropy."""
    return {
        "input_shape": [1, 6, 6],
        "layers": [
            {"type": "conv", "filters": 2, "kernel": 3, "stride": 1, "padding": 0, "activation": "relu"},
            {"type": "maxpool", "size": 2, "stride": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 1, "activation": "sigmoid"},
        ],
        "loss": "binary_cross_entropy",
        "dtype": dtype,
        "seed": seed,
    }
