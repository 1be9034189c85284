"""A session as bytes and back: an uncompressed ``.npz`` archive, readable with ``numpy.load``.

Members:
- ``meta.json`` (uint8 bytes of UTF-8 JSON): format name and version, id, normalized spec, seed,
  preset, positive class, step, cursor, created/last-used times, held-out evaluations, and the
  optimizer's ``state_dict()`` (name, hyperparameters, step count), its arrays replaced by
  ``{"__array__": member}`` references and its dicts by ``{"__dict__": [[key, value], ...]}``.
- ``net/<key>``: the arrays of ``network.state_dict()``.
- ``opt/<n>``: the arrays (and NumPy scalars, as 0-d arrays) of the optimizer state.
- ``history/steps``, ``history/loss``, ``history/accuracy``.
- ``last_input/x`` (the network input of the last trace or step, C×H×W) and
  ``last_input/target`` (its target as the loss took it), with ``last_input`` (``{"digit",
  "source"}``) in ``meta.json``; all absent before the first trace, and in files written before
  sessions remembered it (those still load, with no last input).

A session store also keeps the last input apart from the session's bytes (``last_input_record``,
``read_last_input_record``): a trace changes only that, and rewriting the whole session for it
cost more than the trace itself.

Decoding a session that was encoded gives back the same values bit for bit. Anything that is not
such a file (wrong format, truncated, foreign arrays, shapes that do not fit the spec, non-finite
weights, oversized) raises ``ValueError`` with a message saying what was wrong.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
import orjson

from engine import Network
from engine.optim import optimizer_from_state

from app.sessions import History, Session, TracedInput

FORMAT_NAME = "cnnviz-session"
FORMAT_VERSION = 1
MAX_MEMBERS = 4096


def encode_session(session: Session) -> bytes:
    """Serialise ``session`` (call with ``session.lock`` held so it does not change meanwhile)."""
    arrays: dict[str, np.ndarray] = {}
    for key, value in session.network.state_dict().items():
        arrays[f"net/{key}"] = np.asarray(value)
    optimizer_state = None
    if session.optimizer is not None:
        optimizer_state = _flatten(session.optimizer.state_dict(), arrays)
    history = session.history
    arrays["history/steps"] = np.asarray(history.steps, dtype=np.int64)
    arrays["history/loss"] = np.asarray(history.loss, dtype=np.float64)
    arrays["history/accuracy"] = np.asarray(history.accuracy, dtype=np.float64)
    last_input = None
    if session.last_input is not None:
        arrays["last_input/x"] = session.last_input.x
        arrays["last_input/target"] = session.last_input.target
        last_input = {"digit": session.last_input.digit, "source": session.last_input.source}
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "id": session.id,
        "spec": session.spec,
        "seed": session.seed,
        "preset": session.preset,
        "positive_class": session.positive_class,
        "optimizer_state": optimizer_state,
        "step": session.step,
        "cursor": session.cursor,
        "created_at": session.created_at,
        "last_used": session.last_used,
        "evaluations": history.evaluations,
        "last_input": last_input,
    }
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode_session(data: bytes, *, max_bytes: int, new_id: str | None = None,
                   max_history: int | None = None) -> Session:
    """Rebuild a session from ``encode_session`` output; ``new_id`` replaces the stored id (an
    imported file must not take over someone else's session id). Raises ``ValueError``."""
    members = _read_members(data, max_bytes)
    meta = _read_meta(members)
    try:
        network = Network.from_spec(meta["spec"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"the session file's spec is not valid: {exc}") from exc
    _load_weights(network, members)

    session = Session(
        id=new_id if new_id is not None else _field(meta, "id", str),
        spec=network.spec,
        network=network,
        seed=_field(meta, "seed", int),
        preset=_field(meta, "preset", str, optional=True),
        positive_class=_field(meta, "positive_class", int, optional=True),
        step=_non_negative(meta, "step"),
        cursor=_non_negative(meta, "cursor"),
        created_at=_field(meta, "created_at", float),
        last_used=_field(meta, "last_used", float),
        history=_read_history(meta, members, max_history),
        last_input=_read_last_input(network, meta, members),
    )
    _restore_optimizer(session, meta, members)
    _refuse_foreign_members(members, network, meta)
    return session


def _refuse_foreign_members(members: dict[str, np.ndarray], network: Network,
                            meta: dict[str, Any]) -> None:
    """Every member must be one this format names: a file carrying anything else was not
    written by ``encode_session``, and what it carries would be silently dropped."""
    expected = {"meta.json", "history/steps", "history/loss", "history/accuracy"}
    expected.update(f"net/{key}" for key in network.state_dict())
    if meta.get("last_input") is not None:
        expected.update({"last_input/x", "last_input/target"})
    pending = [meta.get("optimizer_state")]
    while pending:
        tree = pending.pop()
        if isinstance(tree, dict) and "__array__" in tree:
            expected.add(str(tree["__array__"]))
        elif isinstance(tree, dict):
            pending.extend(tree.values())
        elif isinstance(tree, list):
            pending.extend(tree)
    foreign = sorted(set(members) - expected)
    if foreign:
        shown = ", ".join(repr(name[:60]) for name in foreign[:5])
        raise ValueError(f"the session file holds members a session file does not have: {shown}"
                         + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""))


def check_archive_size(infos: list[zipfile.ZipInfo], max_bytes: int) -> None:
    """A session file's member count and unpacked size within bounds (the archive's directory
    says both before anything is unpacked)."""
    if len(infos) > MAX_MEMBERS:
        raise ValueError(f"the session file has more than {MAX_MEMBERS} members")
    if sum(info.file_size for info in infos) > max_bytes:
        raise ValueError(f"the session file unpacks to more than {max_bytes} bytes")


def _read_members(data: bytes, max_bytes: int) -> dict[str, np.ndarray]:
    if len(data) > max_bytes:
        raise ValueError(f"the session file is larger than the {max_bytes}-byte limit")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            check_archive_size(archive.infolist(), max_bytes)
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as exc:
        raise ValueError(f"not a readable session file: {exc}") from exc
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise ValueError(f"not a session file (expected a .npz archive): {exc}") from exc


def _read_meta(members: dict[str, np.ndarray]) -> dict[str, Any]:
    raw = members.get("meta.json")
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError("not a session file: meta.json is missing")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the session file's meta.json is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ValueError(f"not a session file: its format is not {FORMAT_NAME!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"unsupported session file version {meta.get('version')!r} "
            f"(this server reads version {FORMAT_VERSION})"
        )
    return meta


def _field(meta: dict[str, Any], key: str, kind: type, *, optional: bool = False) -> Any:
    value = meta.get(key)
    if value is None and optional:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"the session file's {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def _non_negative(meta: dict[str, Any], key: str) -> int:
    value = _field(meta, key, int)
    if value < 0:
        raise ValueError(f"the session file's {key!r} must not be negative, got {value}")
    return value


def _load_weights(network: Network, members: dict[str, np.ndarray]) -> None:
    expected = network.state_dict()
    found = {name[len("net/"):]: arr for name, arr in members.items() if name.startswith("net/")}
    if set(found) != set(expected):
        raise ValueError(
            "the session file's weights do not match its spec: expected "
            f"{sorted(expected)}, found {sorted(found)}"
        )
    for key, reference in expected.items():
        arr = found[key]
        if arr.shape != reference.shape or arr.dtype != reference.dtype:
            raise ValueError(
                f"weight {key!r} has shape {arr.shape} and dtype {arr.dtype}; the spec needs "
                f"{reference.shape} {reference.dtype}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"weight {key!r} holds NaN or infinite values")
    network.load_state_dict(found)


def _read_history(meta: dict[str, Any], members: dict[str, np.ndarray],
                  max_history: int | None = None) -> History:
    """The history columns; with ``max_history``, only their newest entries (cut before they
    become Python lists, so a file declaring millions of entries costs no more than its bytes)."""
    arrays = {}
    for name, kind in (("steps", "iu"), ("loss", "f"), ("accuracy", "f")):
        arr = members.get(f"history/{name}")
        if arr is None or arr.ndim != 1 or arr.dtype.kind not in kind:
            raise ValueError(f"the session file's history/{name} is missing or malformed")
        arrays[name] = arr
    if not len(arrays["steps"]) == len(arrays["loss"]) == len(arrays["accuracy"]):
        raise ValueError("the session file's history columns differ in length")
    first = 0 if max_history is None else max(0, len(arrays["steps"]) - max_history)
    columns = {name: arr[first:].tolist() for name, arr in arrays.items()}
    evaluations = meta.get("evaluations")
    if not isinstance(evaluations, list) or not all(
        isinstance(e, dict) and isinstance(e.get("step"), int) for e in evaluations
    ):
        raise ValueError("the session file's evaluations are malformed")
    return History(evaluations=evaluations, **columns)


def _read_last_input(network: Network, meta: dict[str, Any],
                     members: dict[str, np.ndarray]) -> TracedInput | None:
    described = meta.get("last_input")
    x, target = members.get("last_input/x"), members.get("last_input/target")
    if described is None and x is None and target is None:
        return None
    if not isinstance(described, dict) or x is None or target is None:
        raise ValueError("the session file's last input is incomplete")
    if x.shape != network.input_shape or x.dtype.kind != "f" or not np.all(np.isfinite(x)):
        raise ValueError(f"the session file's last input must be finite floats shaped "
                         f"{network.input_shape}, got {x.dtype} {x.shape}")
    try:
        network.check_target(target[None], 1)
    except ValueError as exc:
        raise ValueError(f"the session file's last input has an unusable target: {exc}") from exc
    digit, source = described.get("digit"), described.get("source")
    if digit is not None and (not isinstance(digit, int) or isinstance(digit, bool)
                              or not 0 <= digit <= 9):
        raise ValueError(f"the session file's last input has no valid digit: {digit!r}")
    if not isinstance(source, dict):
        raise ValueError("the session file's last input has no valid source")
    return TracedInput(x=x, target=target, digit=digit, source=source)


LAST_INPUT_FIELDS = ("input_meta", "input_x", "input_target")


def last_input_record(traced: TracedInput) -> dict[str, bytes]:
    """``traced`` as a store keeps it beside a session (``LAST_INPUT_FIELDS``): the arrays' raw
    bytes, and JSON with the digit, the source and each array's dtype and shape."""
    meta = {"digit": traced.digit, "source": traced.source,
            "x": [traced.x.dtype.str, list(traced.x.shape)],
            "target": [traced.target.dtype.str, list(traced.target.shape)]}
    # orjson, not json: a trace writes this record, and the standard library's encoder, cold
    # after the engine's work, took ~20 us of a LeNet-5 trace's ~1.4 ms
    return {"input_meta": orjson.dumps(meta),
            "input_x": np.ascontiguousarray(traced.x).tobytes(),
            "input_target": np.ascontiguousarray(traced.target).tobytes()}


def read_last_input_record(network: Network, record: dict[str, bytes]) -> TracedInput:
    """The input ``last_input_record`` wrote, checked as a session file's last input is;
    ``ValueError`` when the record is damaged."""
    try:
        meta = json.loads(bytes(record["input_meta"]).decode("utf-8"))
        arrays = {}
        for name in ("x", "target"):
            dtype, shape = meta[name]
            if np.dtype(dtype).kind not in "iuf":
                raise ValueError(f"{name} is not numeric")
            arrays[f"last_input/{name}"] = np.frombuffer(
                bytes(record[f"input_{name}"]), dtype=np.dtype(dtype)).reshape(shape).copy()
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the stored last input is not readable: {exc}") from exc
    described = {"digit": meta.get("digit"), "source": meta.get("source")}
    return _read_last_input(network, {"last_input": described}, arrays)


def _restore_optimizer(
    session: Session, meta: dict[str, Any], members: dict[str, np.ndarray]
) -> None:
    state = meta.get("optimizer_state")
    if state is None:
        return
    try:
        session.optimizer = optimizer_from_state(_unflatten(state, members))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"the session file's optimizer state does not load: {exc}") from exc


def _flatten(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """JSON tree of ``value`` with its arrays moved into ``arrays`` under ``opt/<n>``."""
    if isinstance(value, (np.ndarray, np.generic)):
        member = f"opt/{sum(1 for k in arrays if k.startswith('opt/'))}"
        arrays[member] = np.asarray(value)
        return {"__array__": member, "scalar": isinstance(value, np.generic)}
    if isinstance(value, dict):
        return {"__dict__": [[key, _flatten(item, arrays)] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_flatten(item, arrays) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store optimizer state of type {type(value).__name__}")


def _unflatten(tree: Any, members: dict[str, np.ndarray]) -> Any:
    if isinstance(tree, list):
        return [_unflatten(item, members) for item in tree]
    if isinstance(tree, dict) and "__array__" in tree:
        arr = members.get(tree["__array__"])
        if arr is None or not str(tree["__array__"]).startswith("opt/"):
            raise KeyError(f"optimizer array {tree['__array__']!r} is missing")
        return arr[()] if tree.get("scalar") else arr
    if isinstance(tree, dict) and "__dict__" in tree:
        return {key: _unflatten(item, members) for key, item in tree["__dict__"]}
    if isinstance(tree, dict):
        raise ValueError("unrecognised optimizer state entry")
    return tree
