"""Ready-made networks for the page's picker. Each spec is what ``Network.from_spec`` takes;
``seed`` is filled in per session."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import Network, architectures

TINY_POSITIVE_CLASS = 0


@dataclass(frozen=True)
class Example:
    """A fixed input with its own target (not a digit), traced as ``{"input": {"example": name}}``
    on a session of the preset that carries it."""

    name: str
    description: str
    input: list  # (C, H, W) as nested lists, the network's input shape
    target: list[float]  # what the loss compares the output with (mse)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input": self.input,
                "target": self.target}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    spec: dict[str, Any]
    positive_class: int | None = None
    # Weights every new session of the preset starts from (the seed is then irrelevant): one
    # {"W", "b"} (nested lists) or {} per layer, as GET /api/presets shows them.
    initial_params: list[dict[str, list]] | None = None
    examples: tuple[Example, ...] = ()

    def spec_with_seed(self, seed: int) -> dict[str, Any]:
        spec = copy.deepcopy(self.spec)
        spec["seed"] = seed
        return spec

    def initialize(self, network: Network) -> None:
        """Put the preset's fixed weights (if any) into a freshly built network."""
        if self.initial_params is not None:
            network.load_state_dict({f"{i}.{key}": np.asarray(value, dtype=network.dtype)
                                     for i, layer in enumerate(self.initial_params)
                                     for key, value in layer.items()})

    def example(self, name: str) -> Example | None:
        return next((example for example in self.examples if example.name == name), None)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "spec": self.spec_with_seed(0), "positive_class": self.positive_class,
                "initial_params": self.initial_params,
                "examples": [example.as_json() for example in self.examples]}


def _conv(filters: int, kernel: int, activation: str, padding: int = 0) -> dict[str, Any]:
    return {"type": "conv", "filters": filters, "kernel": kernel, "stride": 1,
            "padding": padding, "activation": activation}


def _pool(kind: str, size: int = 2) -> dict[str, Any]:
    return {"type": kind, "size": size, "stride": size}


def _dense(units: int, activation: str) -> dict[str, Any]:
    return {"type": "dense", "units": units, "activation": activation}


FLATTEN = {"type": "flatten"}

# The notes' first worked example: X (3x3) correlated with F (2x2) gives O; with dL/dO given,
# dL/dF = correlate(X, dL/dO) and dL/dX = full convolution of rot180(F) with dL/dO. An identity
# dense layer under mse passes dL/dO through unchanged when the target is O - dL/dO (N = 1:
# delta = a - y), so one trace shows every number of the example.
WORKED_X = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]
WORKED_F = [[1.0, 2.0], [3.0, 4.0]]
WORKED_DL_DO = [[1.0, 0.0], [2.0, -1.0]]
WORKED_O = [[37.0, 47.0], [67.0, 77.0]]  # correlate(WORKED_X, WORKED_F), by hand
WORKED_TARGET = [o - d for o_row, d_row in zip(WORKED_O, WORKED_DL_DO) for o, d in zip(o_row, d_row)]

WORKED = Preset(
    "worked",
    "The notes' first worked example, number by number: a 3x3 input X = [[1,2,3],[4,5,6],"
    "[7,8,9]], one 2x2 filter F = [[1,2],[3,4]] (no bias, identity), flatten, a dense layer "
    "fixed to the identity, mean squared error against the target O - dL/dO = [36,47,65,78]. "
    "Trace the example input (\"worked\"): O = [[37,47],[67,77]], dL/dO = [[1,0],[2,-1]], "
    "dL/dF = [[4,6],[10,12]], dL/dX = [[1,2,0],[5,7,-2],[6,5,-4]]. A step on the example "
    "subtracts the learning rate times these gradients (the inputs are large: a rate near "
    "1e-5 makes the loss go down, larger ones overshoot). MNIST digits work too, "
    "averaged down to 3x3, against the one-hot digit (digits 0..3).",
    {"input_shape": [1, 3, 3],
     "layers": [{"type": "conv", "filters": 1, "kernel": 2, "stride": 1, "padding": 0,
                 "activation": "identity"},
                FLATTEN, _dense(4, "identity")],
     "loss": "mse", "dtype": "float64"},
    initial_params=[{"W": [[WORKED_F]], "b": [0.0]}, {},
                    {"W": np.eye(4).tolist(), "b": [0.0] * 4}],
    examples=(Example("worked", "X of the notes' first worked example, with the target "
                      "O - dL/dO that makes the loss's gradient at O exactly dL/dO",
                      [WORKED_X], WORKED_TARGET),),
)


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
    WORKED,
)}
