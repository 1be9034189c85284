"""Shared fixtures: a fresh app per test (its own in-memory store) and ways to look inside a
session to prove a refused request left it exactly as it was."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings


# A linear net under MSE: with learning rate 10 each step multiplies the error by roughly
# lr * sum(x^2), so float32 weights overflow within a few steps. Used to provoke divergence.
LINEAR_MSE_SPEC = {"input_shape": [1, 28, 28],
                   "layers": [{"type": "flatten"}, {"type": "dense", "units": 10}],
                   "loss": "mse"}


@pytest.fixture
def app():
    return create_app(Settings())


@pytest.fixture
def client(app):
    with TestClient(app) as test_client:
        yield test_client


def create(client: TestClient, **body: Any) -> str:
    body = body or {"preset": "lenet5", "seed": 0}
    response = client.post("/api/sessions", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


@dataclass
class Snapshot:
    step: int
    cursor: int
    weights: dict[str, np.ndarray]
    optimizer: dict[str, Any] | None
    history: tuple

    def assert_same_as(self, other: "Snapshot") -> None:
        assert (self.step, self.cursor, self.history) == (other.step, other.cursor, other.history)
        assert self.weights.keys() == other.weights.keys()
        for key in self.weights:
            np.testing.assert_array_equal(self.weights[key], other.weights[key], err_msg=key)
        assert (self.optimizer is None) == (other.optimizer is None)
        if self.optimizer is not None:
            assert self.optimizer.keys() == other.optimizer.keys()
            for key, value in self.optimizer.items():
                np.testing.assert_array_equal(value, other.optimizer[key], err_msg=key)


def snapshot(app, session_id: str) -> Snapshot:
    session = app.state.store.get(session_id)
    with session.lock:
        history = session.history
        return Snapshot(
            step=session.step,
            cursor=session.cursor,
            weights=session.network.state_dict(),
            optimizer=None if session.optimizer is None else session.optimizer.state_dict(),
            history=(tuple(history.steps), tuple(history.loss), tuple(history.accuracy),
                     len(history.evaluations)),
        )


def mnist_digit(index: int = 0) -> list[list[float]]:
    from engine import train_split
    return train_split()[0][index, 0].tolist()


def engine_testkit() -> ModuleType:
    """tests/engine/engine_testkit.py (its PyTorch reference), loaded by path: the engine tests'
    folder is not a package."""
    name = "engine_testkit_for_api"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "engine" / "engine_testkit.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]
