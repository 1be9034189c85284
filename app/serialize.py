"""Engine objects as JSON, fast.

A LeNet-5 step answer holds ~200k floats; ``orjson`` writes NumPy arrays directly
(``OPT_SERIALIZE_NUMPY``) without building Python lists, which keeps serialisation to a few
milliseconds. Non-finite floats come out as ``null``, so a response is always valid JSON.
Arrays are for one sample: the batch axis of the engine's (1, ...) arrays is dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi.responses import JSONResponse

from engine import Network, Trace

from app.datasets import TargetRule

ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, default=_default, option=ORJSON_OPTIONS)


class FastJSONResponse(JSONResponse):
    """JSON response rendered by orjson, NumPy arrays included."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def params_json(params: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Copies of per-layer ``{"W", "b"}`` (``{}`` for layers without weights)."""
    return [{key: value.copy() for key, value in layer.items()} for layer in params]


def trace_json(
    trace: Trace,
    network: Network,
    rule: TargetRule,
    *,
    label: int | None,
    source: dict[str, Any],
    target: np.ndarray | None = None,
) -> dict[str, Any]:
    """The DESIGN.md trace of sample 0 of ``trace``, plus ``target``, ``predicted_class``,
    ``source`` and per layer ``spec`` and ``grad_a``. A sample without a digit (a preset's
    example: ``label`` None) gives its own ``target`` and no predicted class."""
    prediction = trace.output[0]
    layers = []
    for record, (input_shape, output_shape) in zip(trace.layers, network.layer_shapes):
        layer = {
            "index": record.index,
            "name": record.name,
            "type": record.type,
            "spec": record.spec,
            "input_shape": list(input_shape),
            "output_shape": list(output_shape),
            "z": record.z[0],
            "a": record.a[0],
            "delta": record.delta[0],
            "grad_a": None if record.grad_a is None else record.grad_a[0],
            "grads": record.grads,
            "params": record.params,
        }
        if record.argmax is not None:
            layer["argmax"] = record.argmax[0]
        layers.append(layer)
    return {
        "loss": trace.loss,
        "label": label,
        "target": rule.target_json(label) if label is not None else target,
        "prediction": prediction,
        "predicted_class": (int(rule.predicted_class(trace.output)[0]) if label is not None
                            else None),
        "source": source,
        "input": trace.x[0],
        "input_grad": trace.input_grad[0],
        "layers": layers,
    }
