"""Optimizers that apply a trace's gradients to the network's live parameter arrays.

Conventions follow PyTorch's `torch.optim` so that the two can be compared step for step:
momentum keeps v = mu*v + g and steps p -= lr*v; Adam uses bias-corrected moments and
p -= lr * m_hat / (sqrt(v_hat) + eps).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _grads_of(grads: Any) -> list[dict]:
    """Accept a Trace (its layers' grads) or a list of {"W", "b"} dicts aligned with params."""
    layers = getattr(grads, "layers", None)
    return [layer.grads for layer in layers] if layers is not None else list(grads)


class Optimizer:
    name = ""
    hyper_names: tuple[str, ...] = ()

    def __init__(self, learning_rate: float):
        if not np.isfinite(learning_rate) or learning_rate <= 0:
            raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate}")
        self.learning_rate = float(learning_rate)
        self.steps = 0
        self.slots: dict[str, np.ndarray] = {}  # per-parameter state, keyed "{layer}.{W|b}.{slot}"

    def _slot(self, key: str, like: np.ndarray) -> np.ndarray:
        if key not in self.slots:
            self.slots[key] = np.zeros_like(like)
        return self.slots[key]

    def step(self, params: list[dict], grads: Any) -> None:
        grads = _grads_of(grads)
        if len(grads) != len(params):
            raise ValueError(f"got gradients for {len(grads)} layers, the network has {len(params)}")
        self.steps += 1
        for index, (layer_params, layer_grads) in enumerate(zip(params, grads)):
            for key, value in layer_params.items():
                self._update(f"{index}.{key}", value, layer_grads[key].astype(value.dtype, copy=False))

    def _update(self, key: str, param: np.ndarray, grad: np.ndarray) -> None:
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, float]:
        return {"learning_rate": self.learning_rate, **{n: getattr(self, n) for n in self.hyper_names}}

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps, **self.hyperparameters(),
                **{f"slot.{key}": value.copy() for key, value in self.slots.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"optimizer state is for {state.get('name')!r}, not {self.name!r}")
        self.steps = int(state["steps"])
        self.learning_rate = float(state["learning_rate"])
        for name in self.hyper_names:
            setattr(self, name, float(state[name]))
        self.slots = {key[len("slot."):]: np.array(value) for key, value in state.items()
                      if key.startswith("slot.")}


class SGD(Optimizer):
    name = "sgd"

    def _update(self, key, param, grad):
        param -= self.learning_rate * grad


class Momentum(Optimizer):
    name = "momentum"
    hyper_names = ("momentum",)

    def __init__(self, learning_rate: float, momentum: float = 0.9):
        super().__init__(learning_rate)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)

    def _update(self, key, param, grad):
        velocity = self._slot(f"{key}.velocity", param)
        velocity *= self.momentum
        velocity += grad
        param -= self.learning_rate * velocity


MIN_ADAM_EPS = 1e-30


class Adam(Optimizer):
    name = "adam"
    hyper_names = ("beta1", "beta2", "eps")

    def __init__(self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(learning_rate)
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam needs 0 <= beta1, beta2 < 1, got {beta1}, {beta2}")
        # A smaller eps rounds to 0 in float32, and a parameter whose gradient has always been 0
        # would then step by 0/0 = NaN.
        if not MIN_ADAM_EPS <= eps <= 1:
            raise ValueError(f"Adam needs {MIN_ADAM_EPS:g} <= eps <= 1, got {eps}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def _update(self, key, param, grad):
        m = self._slot(f"{key}.m", param)
        v = self._slot(f"{key}.v", param)
        m *= self.beta1
        m += (1 - self.beta1) * grad
        v *= self.beta2
        v += (1 - self.beta2) * grad * grad
        m_hat = m / (1 - self.beta1 ** self.steps)
        v_hat = v / (1 - self.beta2 ** self.steps)
        param -= self.learning_rate * m_hat / (np.sqrt(v_hat) + self.eps)


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Adam)}


def make_optimizer(name: str, learning_rate: float, **hyper: float) -> Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](learning_rate, **hyper)


def optimizer_from_state(state: dict[str, Any]) -> Optimizer:
    """Rebuild an optimizer saved with state_dict()."""
    name = str(state.get("name"))
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r} in saved state")
    cls = OPTIMIZERS[name]
    optimizer = cls(float(state["learning_rate"]), **{n: float(state[n]) for n in cls.hyper_names})
    optimizer.load_state_dict(state)
    return optimizer


__all__ = ("SGD", "Momentum", "Adam", "make_optimizer", "optimizer_from_state", "OPTIMIZERS")
