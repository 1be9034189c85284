"""The 10,000 MNIST digits shipped in engine/data (see its README for the attribution).

Images come as float32 in [0, 1], shape (N, 1, 28, 28); labels as int64. The arrays are cached and
read-only, so no caller can change what another one sees.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

DATA_FILE = Path(__file__).parent / "data" / "mnist-10k.npz"
TRAIN_SIZE = 9000


@lru_cache(maxsize=1)
def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    with np.load(DATA_FILE) as data:
        images = (data["images"].astype(np.float32) / 255.0)[:, None, :, :]
        labels = data["labels"].astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def train_split() -> tuple[np.ndarray, np.ndarray]:
    """The first 9,000 digits."""
    images, labels = load_mnist()
    return images[:TRAIN_SIZE], labels[:TRAIN_SIZE]


def test_split() -> tuple[np.ndarray, np.ndarray]:
    """The last 1,000 digits."""
    images, labels = load_mnist()
    return images[TRAIN_SIZE:], labels[TRAIN_SIZE:]


test_split.__test__ = False  # a data function, not a pytest test, when imported into a test module
