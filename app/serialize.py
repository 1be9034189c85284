"""Engine objects as answers: JSON (the default) or a safetensors file, limited to the fields asked.

A LeNet-5 step answer holds ~200k floats; ``orjson`` writes NumPy arrays directly
(``OPT_SERIALIZE_NUMPY``) without building Python lists, which keeps serialisation to a few
milliseconds. Non-finite floats come out as ``null``, so a response is always valid JSON.
Arrays are for one sample: the batch axis of the engine's (1, ...) arrays is dropped.

The same answer as safetensors (``AnswerView(format="safetensors")``): every NumPy array of the
answer becomes a tensor named by its path in the JSON (``layers.3.grads.W``, list positions as
numbers), in the network's dtype (integer arrays, the max-pool winners, as int32), and leaves the
JSON; what remains (numbers, strings, lists of numbers, ``null``s, the emptied dicts and lists that
held the arrays) is the header's ``__metadata__["json"]``. A reader parses that JSON and puts each
tensor back at its path. ~4 bytes per float32 instead of ~10, and nothing to parse per number.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi.responses import JSONResponse, Response

from engine import Network, Trace

from app.datasets import TargetRule
from app.tensor_file import encode_safetensors

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


# The per-layer arrays a client may limit an answer to (``?fields=``); in a step ``params`` also
# covers ``params_before``/``params_after`` and ``grads`` covers ``batch_grads``.
LAYER_FIELDS = ("z", "a", "delta", "grad_a", "grads", "params", "argmax")
SAFETENSORS_MEDIA_TYPE = "application/octet-stream"
# Keys that repeat other arrays of the same answer for JSON clients (the first-round contract
# lists them) and are left out of the binary answer: a step's ``params_before`` is its
# ``trace.layers.{i}.params``.
REPEATS_FOR_JSON_ONLY = ("params_before",)
# A step answer's per-layer lists outside its trace, and the field each comes with.
STEP_LISTS = {"params_before": "params", "params_after": "params", "batch_grads": "grads"}


def parse_fields(text: str | None) -> frozenset[str]:
    """The set named by ``?fields=z,a,delta`` (every field when absent; ``""`` names none);
    ValueError naming an unknown one."""
    if text is None:
        return frozenset(LAYER_FIELDS)
    names = {name.strip() for name in text.split(",")} - {""}
    unknown = sorted(names - set(LAYER_FIELDS))
    if unknown:
        raise ValueError(f"unknown field{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(name) for name in unknown)}; fields is a "
                         f"comma-separated list of any of {', '.join(LAYER_FIELDS)}")
    return frozenset(names)


@dataclass(frozen=True)
class AnswerView:
    """How a trace or step answer is sent: its format and which per-layer arrays it carries."""

    format: str = "json"
    fields: frozenset[str] = frozenset(LAYER_FIELDS)

    def response(self, answer: dict[str, Any]) -> Response:
        if self.format == "safetensors":
            return Response(safetensors_answer(answer), media_type=SAFETENSORS_MEDIA_TYPE)
        return FastJSONResponse(answer)


def step_answer_with_fields(answer: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    """A step answer holding every array, limited to ``fields`` as ``?fields=`` limits a step
    (the trace's per-layer arrays, and ``STEP_LISTS`` with their field). Copies the containers,
    never the arrays, and never changes ``answer``."""
    limited = {key: value for key, value in answer.items()
               if key not in STEP_LISTS or STEP_LISTS[key] in fields}
    trace = answer["trace"]
    limited["trace"] = {**trace, "layers": [
        {key: value for key, value in layer.items() if key not in LAYER_FIELDS or key in fields}
        for layer in trace["layers"]]}
    return limited


def array_bytes(content: Any, seen: set[int] | None = None) -> int:
    """The bytes of the NumPy arrays in ``content`` (nested dicts and lists), each array counted
    once however often it appears (a step's ``params_before`` is its trace's params)."""
    seen = set() if seen is None else seen
    if isinstance(content, np.ndarray):
        if id(content) in seen:
            return 0
        seen.add(id(content))
        return int(content.nbytes)
    if isinstance(content, dict):
        content = content.values()
    elif not isinstance(content, list):
        return 0
    return sum(array_bytes(item, seen) for item in content)


def split_tensors(content: Any, path: str = "",
                  tensors: dict[str, np.ndarray] | None = None) -> tuple[Any, dict[str, np.ndarray]]:
    """``content`` without its NumPy arrays (dict keys dropped; dicts and lists kept, so a list
    position still means the same layer) and the arrays by dotted path. Copies the containers
    that held arrays (the others are shared), never the arrays, and never changes ``content``."""
    tensors = {} if tensors is None else tensors
    if isinstance(content, dict):
        return _split_dict(content, path, tensors), tensors
    if isinstance(content, list) and _holds_containers(content):
        return [split_tensors(item, f"{path}{i}.", tensors)[0]
                for i, item in enumerate(content)], tensors
    return content, tensors


# The values a dict of an answer mostly holds, kept as they are without a closer look.
_PLAIN = frozenset({int, float, str, bool, type(None)})


def _split_dict(content: dict, path: str, tensors: dict[str, np.ndarray]) -> dict:
    # Values looked at by exact type first, and no walk into the dicts without arrays (a layer's
    # spec): this walk was the largest part of rendering a LeNet-5 trace's answer.
    kept = {}
    for key, value in content.items():
        if type(value) in _PLAIN:
            kept[key] = value
        elif isinstance(value, np.ndarray):
            tensors[path + key] = value.astype(np.int32, copy=False) if value.dtype.kind in "iu" else value
        elif isinstance(value, dict):
            kept[key] = _split_dict(value, f"{path}{key}.", tensors) if _holds_arrays(value) else value
        elif isinstance(value, list) and _holds_containers(value):
            kept[key] = [split_tensors(item, f"{path}{key}.{i}.", tensors)[0]
                         for i, item in enumerate(value)]
        else:
            kept[key] = value
    return kept


def _holds_containers(items: list) -> bool:
    """Whether a list holds dicts or lists (walked into) rather than only values (kept whole)."""
    for item in items:
        if isinstance(item, (dict, list)):
            return True
    return False


def _holds_arrays(content: dict) -> bool:
    """Whether a dict holds an array at any depth (a layer's spec, a sample's source do not)."""
    for value in content.values():
        if type(value) in _PLAIN:
            continue
        if isinstance(value, np.ndarray) or (isinstance(value, dict) and _holds_arrays(value)) or (
                isinstance(value, list) and _holds_containers(value)):
            return True
    return False


def safetensors_answer(answer: dict[str, Any]) -> bytes:
    """``answer`` as a safetensors file (see the module docstring)."""
    rest, tensors = split_tensors({key: value for key, value in answer.items()
                                   if key not in REPEATS_FOR_JSON_ONLY})
    return encode_safetensors(tensors, {"json": dumps(rest).decode()})


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
    fields: Iterable[str] = LAYER_FIELDS,
) -> dict[str, Any]:
    """The DESIGN.md trace of sample 0 of ``trace``, plus ``target``, ``predicted_class``,
    ``source`` and per layer ``spec`` and ``grad_a``. A sample without a digit (a preset's
    example: ``label`` None) gives its own ``target`` and no predicted class. Per-layer arrays
    not in ``fields`` are left out (their keys absent)."""
    prediction = trace.output[0]
    fields = frozenset(fields)
    # sample 0's rows of the batch arrays, taken only for the fields asked (the page asks a few)
    sample_arrays = [name for name in ("z", "a", "delta") if name in fields]
    with_grad_a, with_argmax = "grad_a" in fields, "argmax" in fields
    with_grads, with_params = "grads" in fields, "params" in fields
    layers = []
    for record, (input_shape, output_shape) in zip(trace.layers, network.layer_shapes):
        layer = {
            "index": record.index,
            "name": record.name,
            "type": record.type,
            "spec": record.spec,
            "input_shape": list(input_shape),
            "output_shape": list(output_shape),
        }
        for name in sample_arrays:
            layer[name] = getattr(record, name)[0]
        if with_grad_a:
            layer["grad_a"] = None if record.grad_a is None else record.grad_a[0]
        if with_grads:
            layer["grads"] = record.grads
        if with_params:
            layer["params"] = record.params
        if with_argmax and record.argmax is not None:
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
