"""Ready-made networks for the page's picker. Each spec is what ``Network.from_spec`` takes;
``seed`` is filled in per session."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from engine import architectures

TINY_POSITIVE_CLASS = 0


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    spec: dict[str, Any]
    positive_class: int | None = None

    def spec_with_seed(self, seed: int) -> dict[str, Any]:
        spec = copy.deepcopy(self.spec)
        spec["seed"] = seed
        return spec

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "spec": self.spec_with_seed(0), "positive_class": self.positive_class}


def _conv(filters: int, kernel: int, activation: str, padding: int = 0) -> dict[str, Any]:
    return {"type": "conv", "filters": filters, "kernel": kernel, "stride": 1,
            "padding": padding, "activation": activation}


def _pool(kind: str, size: int = 2) -> dict[str, Any]:
    return {"type": kind, "size": size, "stride": size}


def _dense(units: int, activation: str) -> dict[str, Any]:
    return {"type": "dense", "units": units, "activation": activation}


FLATTEN = {"type": "flatten"}

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        "lenet5",
        "LeNet-5 (ReLU, max-pool): conv 6@5x5 pad 2, maxpool 2, conv 16@5x5, maxpool 2, "
        "dense 120, 84, 10 softmax; cross-entropy on the digit.",
        architectures.lenet5(),
    ),
    Preset(
        "tiny",
        "The worked example of the notes, small enough to read every number: a 1x6x6 input "
        "(the digit area-averaged down to 6x6), conv 2@3x3 relu, maxpool 2, flatten, dense 1 "
        "sigmoid, binary cross-entropy. The target is 1 when the digit is the session's positive "
        f"class (default {TINY_POSITIVE_CLASS}), else 0.",
        architectures.tiny(),
        positive_class=TINY_POSITIVE_CLASS,
    ),
    Preset(
        "mlp",
        "No convolutions: flatten the 28x28 digit, dense 128 relu, dense 64 relu, dense 10 "
        "softmax; cross-entropy. Compare its weights with the conv nets' shared filters.",
        {"input_shape": [1, 28, 28],
         "layers": [FLATTEN, _dense(128, "relu"), _dense(64, "relu"), _dense(10, "softmax")],
         "loss": "cross_entropy", "dtype": "float32"},
    ),
    Preset(
        "lenet1989",
        "Classic style (LeCun 1989 and the sigmoid/average-pool notes): conv 4@5x5 sigmoid, "
        "avgpool 2, conv 12@5x5 sigmoid, avgpool 2, flatten, dense 10 sigmoid, mean squared "
        "error against the one-hot digit. Deltas pass through sigmoid derivatives and are "
        "spread evenly by the average pools.",
        {"input_shape": [1, 28, 28],
         "layers": [_conv(4, 5, "sigmoid"), _pool("avgpool"), _conv(12, 5, "sigmoid"),
                    _pool("avgpool"), FLATTEN, _dense(10, "sigmoid")],
         "loss": "mse", "dtype": "float32"},
    ),
    Preset(
        "deep",
        "A deeper conv net: two conv 8@3x3 pad 1 relu, maxpool 2, two conv 16@3x3 pad 1 relu, "
        "maxpool 2, flatten, dense 64 relu, dense 10 softmax; cross-entropy. Watch the deltas "
        "shrink or grow as they pass back through more layers.",
        {"input_shape": [1, 28, 28],
         "layers": [_conv(8, 3, "relu", padding=1), _conv(8, 3, "relu", padding=1),
                    _pool("maxpool"), _conv(16, 3, "relu", padding=1),
                    _conv(16, 3, "relu", padding=1), _pool("maxpool"), FLATTEN,
                    _dense(64, "relu"), _dense(10, "softmax")],
         "loss": "cross_entropy", "dtype": "float32"},
    ),
)}
