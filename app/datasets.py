"""How MNIST digits become a session's network inputs and training targets.

Inputs: every digit is 1×28×28. A network whose ``input_shape`` is C×H×W gets the digit
area-averaged down (or up) to H×W (each output pixel is the mean of the 28×28 area it covers,
fractional pixels weighted by their overlap) and repeated over the C channels. So the 1×6×6 ``tiny``
preset sees a 6×6 thumbnail of the digit.

Targets, by the network's loss and number of outputs K:
- K == 1 (``binary_cross_entropy`` or ``mse``): target 1.0 when the digit equals the session's
  positive class, else 0.0; every digit is usable.
- ``cross_entropy``: the digit itself as the class label; usable only when digit < K.
- K > 1 otherwise: the one-hot vector of the digit over K outputs; usable only when digit < K.
Training batches are drawn only from usable digits (the session's training pool).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from engine import Network, test_split, train_split

MNIST_SIDE = 28


def split_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64) of ``"train"`` or ``"test"``."""
    return train_split() if split == "train" else test_split()


def split_size(split: str) -> int:
    return len(split_arrays(split)[1])


@lru_cache(maxsize=64)
def _area_matrix(source: int, target: int) -> np.ndarray:
    """(target, source) weights: row i averages the source interval [i, i+1) * source/target."""
    scale = source / target
    edges = np.arange(target + 1) * scale
    starts, ends = edges[:-1, None], edges[1:, None]
    pixels = np.arange(source)[None, :]
    overlap = np.clip(np.minimum(ends, pixels + 1) - np.maximum(starts, pixels), 0, None)
    matrix = (overlap / scale).astype(np.float64)
    matrix.flags.writeable = False
    return matrix


def fit_to_input(images: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """(N, 1, 28, 28) digits as (N, C, H, W) network inputs (see the module docstring)."""
    channels, height, width = input_shape
    if (height, width) != (MNIST_SIDE, MNIST_SIDE):
        rows = _area_matrix(MNIST_SIDE, height)
        cols = _area_matrix(MNIST_SIDE, width)
        # hr,nirc,wc->nihw: average the rows, then the columns
        images = rows @ images.astype(np.float64) @ cols.T
        images = images.astype(np.float32)
    if channels != 1:
        images = np.repeat(images, channels, axis=1)
    return np.ascontiguousarray(images)


@dataclass(frozen=True)
class TargetRule:
    """Turns digit labels into the targets ``network.trace`` wants (see the module docstring)."""

    loss: str
    outputs: int
    positive_class: int | None

    @classmethod
    def for_network(cls, network: Network, positive_class: int | None) -> "TargetRule":
        return cls(network.loss, network.output_size, positive_class)

    @property
    def binary(self) -> bool:
        return self.outputs == 1

    def describe(self) -> str:
        if self.binary:
            return f"target 1 when the digit is {self.positive_class}, else 0"
        if self.loss == "cross_entropy":
            return f"class label = digit (digits 0..{min(self.outputs, 10) - 1})"
        return f"one-hot vector of the digit over {self.outputs} outputs"

    def usable(self, digits: np.ndarray) -> np.ndarray:
        return np.ones(digits.shape, bool) if self.binary else digits < self.outputs

    def check_label(self, digit: int) -> str | None:
        """Why ``digit`` cannot be a label for this network, or None."""
        if not 0 <= digit <= 9:
            return f"label must be a digit 0..9, got {digit}"
        if not self.binary and digit >= self.outputs:
            return (f"label {digit} does not fit a network with {self.outputs} outputs "
                    f"(labels must be below {self.outputs})")
        return None

    def targets(self, digits: np.ndarray) -> np.ndarray:
        digits = np.asarray(digits, dtype=np.int64)
        if self.binary:
            return (digits == self.positive_class).astype(np.float64)[:, None]
        if self.loss == "cross_entropy":
            return digits
        return np.eye(self.outputs)[digits]

    def predicted_class(self, outputs: np.ndarray) -> np.ndarray:
        """Per sample: 0/1 for a single output (threshold 0.5), else the argmax."""
        if self.binary:
            return (outputs[:, 0] >= 0.5).astype(np.int64)
        return outputs.argmax(axis=1)

    @property
    def classes(self) -> int:
        """How many classes a prediction can be: 2 for a single output (is it the positive
        digit?), else one per output."""
        return 2 if self.binary else self.outputs

    def true_classes(self, digits: np.ndarray) -> np.ndarray:
        digits = np.asarray(digits, dtype=np.int64)
        return (digits == self.positive_class).astype(np.int64) if self.binary else digits

    def confidence(self, outputs: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """Per sample, the network's output for the class it predicted: the probability of a
        softmax or a sigmoid (1 - a when a single output predicts 0), or, for other outputs,
        the winning unit's value."""
        if self.binary:
            return np.where(predicted == 1, outputs[:, 0], 1.0 - outputs[:, 0])
        return outputs[np.arange(len(predicted)), predicted]

    def correct(self, outputs: np.ndarray, digits: np.ndarray) -> np.ndarray:
        return self.predicted_class(outputs) == self.true_classes(digits)

    def target_json(self, digit: int) -> int | list[float]:
        target = self.targets(np.array([digit]))[0]
        return int(target) if np.ndim(target) == 0 else target.tolist()


@lru_cache(maxsize=64)
def usable_indices(split: str, rule: TargetRule) -> np.ndarray:
    """Indices of the split's samples whose digit the rule can use, in file order (read-only)."""
    _, labels = split_arrays(split)
    pool = np.flatnonzero(rule.usable(labels))
    pool.flags.writeable = False
    return pool


def training_pool(rule: TargetRule) -> np.ndarray:
    return usable_indices("train", rule)


def evaluation_pool(rule: TargetRule) -> np.ndarray:
    return usable_indices("test", rule)
