"""A session: one user's network and everything needed to continue training it.

Everything here except ``lock`` is persisted by ``app.session_codec``; the lock only serialises
requests inside one process.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine import Network, Optimizer

# Two moment buffers (Adam) is the most optimizer state any engine optimizer keeps per parameter.
OPTIMIZER_BUFFERS_RESERVED = 2
HISTORY_ENTRY_BYTES = 3 * 32


@dataclass
class History:
    """Per training step: the batch loss before the update and the batch accuracy.

    ``evaluations`` holds held-out results: ``{"step", "split", "samples", "accuracy", "loss"}``.
    Only the newest ``max_history`` steps are kept, so a long-lived session cannot grow without
    bound.
    """

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)

    def append(self, step: int, loss: float, accuracy: float, max_history: int) -> None:
        self.steps.append(step)
        self.loss.append(loss)
        self.accuracy.append(accuracy)
        excess = len(self.steps) - max_history
        if excess > 0:
            del self.steps[:excess], self.loss[:excess], self.accuracy[:excess]

    def add_evaluation(self, evaluation: dict[str, Any], max_history: int) -> None:
        self.evaluations.append(evaluation)
        excess = len(self.evaluations) - max_history
        if excess > 0:
            del self.evaluations[:excess]

    def since(self, step: int) -> dict[str, list]:
        """Entries with a step number greater than ``step``."""
        start = next((i for i, s in enumerate(self.steps) if s > step), len(self.steps))
        return {
            "steps": self.steps[start:],
            "loss": self.loss[start:],
            "accuracy": self.accuracy[start:],
            "evaluations": [e for e in self.evaluations if e["step"] > step],
        }

    def __len__(self) -> int:
        return len(self.steps)


@dataclass
class TracedInput:
    """What the session last traced (a trace, or the first sample of a step): the network input
    ``x`` (C, H, W) exactly as traced, its ``target`` as the loss took it (a class, 0-d int,
    for cross_entropy; else the target vector (K,)), the digit it shows (``None`` for a preset's
    example) and where it came from (``{"dataset", "split", "index"}``, ``{"pixels": True}`` or
    ``{"example", "preset"}``). The PyTorch export runs its model on it."""

    x: np.ndarray
    target: np.ndarray
    digit: int | None
    source: dict[str, Any]


def new_session_id() -> str:
    return secrets.token_urlsafe(16)


@dataclass(frozen=True)
class KeptStep:
    """A step's answer with every array (``app.training.step``), and the bytes its arrays hold
    (counted once, when kept: the store sums every session's memory often)."""

    answer: dict[str, Any]
    nbytes: int

    @property
    def step(self) -> int:
        return self.answer["step"]


@dataclass(eq=False)
class Session:
    """``spec`` is the engine's normalized spec. ``positive_class`` is the digit whose target is 1
    for a network with a single output unit (ignored otherwise). ``optimizer`` is the engine
    optimizer with its state (``None`` before the first step). ``cursor`` counts the training
    samples drawn so far; the next batch starts at that position of the session's training pool.
    ``last_input`` is the input of the last trace or step (``None`` before the first).
    ``last_step`` is the latest step's whole answer, kept in this process's memory only (never
    persisted): the page asks a step for its maps and fetches the weights and gradients of that
    same step afterwards, and a step cannot be taken twice."""

    id: str
    spec: dict[str, Any]
    network: Network
    seed: int
    preset: str | None = None
    positive_class: int | None = None
    optimizer: Optimizer | None = None
    step: int = 0
    cursor: int = 0
    history: History = field(default_factory=History)
    last_input: TracedInput | None = None
    created_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    last_step: KeptStep | None = field(default=None, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(
        cls,
        spec: dict[str, Any],
        *,
        preset: str | None = None,
        positive_class: int | None = None,
    ) -> "Session":
        """Build the network from ``spec``; raises the engine's ``SpecError`` on a bad spec."""
        network = Network.from_spec(spec)
        normalized = network.spec
        return cls(
            id=new_session_id(),
            spec=normalized,
            network=network,
            seed=int(normalized.get("seed", 0)),
            preset=preset,
            positive_class=positive_class,
        )

    def touch(self) -> None:
        self.last_used = time.time()

    def parameter_bytes(self) -> int:
        return sum(int(arr.nbytes) for layer in self.network.params for arr in layer.values())

    def memory_bytes(self) -> int:
        """What the store charges this session against its memory cap: the parameters, room for
        the largest optimizer state, the history and the latest step's kept answer."""
        return (
            self.parameter_bytes() * (1 + OPTIMIZER_BUFFERS_RESERVED)
            + HISTORY_ENTRY_BYTES * (len(self.history) + len(self.history.evaluations))
            + (self.last_input.x.nbytes + self.last_input.target.nbytes
               if self.last_input is not None else 0)
            + (self.last_step.nbytes if self.last_step is not None else 0)
        )

    @property
    def optimizer_name(self) -> str | None:
        return self.optimizer.name if self.optimizer is not None else None

    @property
    def learning_rate(self) -> float | None:
        return self.optimizer.learning_rate if self.optimizer is not None else None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "spec": self.spec,
            "step": self.step,
            "preset": self.preset,
            "positive_class": self.positive_class,
            "optimizer": self.optimizer_name,
            "learning_rate": self.learning_rate,
            "cursor": self.cursor,
            "created_at": self.created_at,
            "last_used": self.last_used,
        }
