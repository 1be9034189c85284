"""Everything an imported session file says is checked before a session exists.

An uploaded file is hostile until proven otherwise. ``app.session_codec`` reads files this
server wrote; an import first passes the checks here, in this order, so that nothing large is
allocated and nothing is built from a value of the wrong type or range:

1. the archive: only ``.npy`` members, each header well formed, of a plain numeric dtype, and
   declaring exactly the bytes the member holds (a header cannot make NumPy allocate more than
   the file brings);
2. ``meta.json``: parsed without NaN or Infinity, nested no deeper than a session file is, and
   every field of the type and in the range a session of this server can have (ids, steps,
   cursor and times; the optimizer's name, hyperparameters and array references; evaluations);
3. the spec against the server's caps (``app.limits.check_spec``), before the network is built;
4. the arrays, once decoded: optimizer state shaped like the weights it belongs to and finite,
   history columns finite, and the history (steps and evaluations) cut to the newest
   ``max_history`` entries as a live session keeps it.

The import either is refused with a ``ValueError`` (a 422) naming the problem, or gives a session
on which every endpoint works.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from engine import SpecError
from engine.optim import MIN_ADAM_EPS, OPTIMIZERS

from app.limits import check_spec
from app.session_codec import FORMAT_NAME, FORMAT_VERSION, check_archive_size, decode_session
from app.sessions import Session
from app.settings import Settings

# A session file's JSON is at most five levels deep (the spec's layers' kernel pairs; the
# optimizer state's key/value pairs); anything deeper is not one.
MAX_JSON_DEPTH = 8
MAX_COUNT = 2**53  # steps, cursor, samples: exact in JSON and in SQLite
MAX_SEED = 2**32 - 1
MAX_TIME = 2.0**40  # seconds since 1970: far in the future, still exact
MAX_PRESET_LENGTH = 64
NUMERIC_KINDS = "biuf"
OPTIMIZER_SLOTS = {"sgd": (), "momentum": ("velocity",), "adam": ("m", "v")}
EVALUATION_KEYS = {"step", "split", "samples", "accuracy", "loss"}


def decode_import(data: bytes, settings: Settings, new_id: str) -> Session:
    """The session an uploaded file holds, or ``ValueError`` saying why it is refused. Caps
    (``app.limits.CapExceeded``) are raised as they are."""
    _check_archive(data, settings.max_session_file_bytes)
    meta = _check_meta(_read_meta_json(data))
    try:
        check_spec(meta["spec"], settings)
    except (SpecError, TypeError, RecursionError) as exc:
        raise ValueError(f"the session file's spec is not valid: {exc}") from None
    session = decode_session(data, max_bytes=settings.max_session_file_bytes, new_id=new_id,
                             max_history=settings.max_history)
    _check_optimizer_arrays(session)
    _check_positive_class(session)
    _cut_history(session, settings.max_history)
    return session


# --- 1. the archive ----------------------------------------------------------------------------

def _check_archive(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise ValueError(f"the session file is larger than the {max_bytes}-byte limit")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            check_archive_size(infos, max_bytes)
            names = set()
            for info in infos:
                if not info.filename.endswith(".npy") or info.filename in names:
                    raise ValueError(f"member {info.filename[:80]!r} is not one array of a "
                                     "session file")
                names.add(info.filename)
                with archive.open(info) as member:
                    _check_array_header(member, info)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError,
            NotImplementedError) as exc:
        raise ValueError(f"not a session file (expected a .npz archive): {exc}") from None


def _check_array_header(member, info: zipfile.ZipInfo) -> None:
    name = info.filename[:-len(".npy")][:80]
    try:
        version = npy_format.read_magic(member)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(member)
        else:
            raise ValueError(f"array format version {version} is not used by session files")
    except (ValueError, SyntaxError, TypeError, KeyError) as exc:
        raise ValueError(f"array {name!r} has a malformed header: {exc}") from None
    if dtype.kind not in NUMERIC_KINDS or dtype.hasobject or dtype.fields is not None:
        raise ValueError(f"array {name!r} has dtype {dtype}; session files hold numbers only")
    header_bytes = member.tell()
    declared = math.prod(shape) * dtype.itemsize
    if declared != info.file_size - header_bytes:
        raise ValueError(f"array {name!r} declares {declared:,} bytes of data but holds "
                         f"{info.file_size - header_bytes:,}")


# --- 2. meta.json ------------------------------------------------------------------------------

def _refuse_constant(name: str) -> Any:
    raise ValueError(f"the session file's meta.json holds {name}, which is not a number")


def _read_meta_json(data: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        try:
            member = archive.open("meta.json.npy")
        except KeyError:
            raise ValueError("not a session file: meta.json is missing") from None
        with member:
            try:
                raw = np.lib.format.read_array(member, allow_pickle=False)
            except ValueError as exc:
                raise ValueError(f"the session file's meta.json is unreadable: {exc}") from None
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError("not a session file: meta.json is not text")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the session file's meta.json is not valid JSON: {exc}") from None
    except RecursionError:
        meta = None
    if meta is None or _depth(meta) > MAX_JSON_DEPTH:
        raise ValueError("the session file's meta.json is nested deeper than a session file is")
    return meta


def _depth(tree: Any) -> int:
    """Nesting depth of a JSON value, without recursion."""
    deepest, pending = 0, [(tree, 1)]
    while pending:
        value, depth = pending.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        children = value.values() if isinstance(value, dict) else (
            value if isinstance(value, list) else ())
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _int_field(meta: dict, key: str, low: int, high: int, *, optional: bool = False) -> None:
    value = meta.get(key)
    if optional and value is None:
        return
    if not _is_int(value) or not low <= value <= high:
        raise ValueError(f"the session file's {key!r} must be a whole number from {low} to "
                         f"{high:,}, got {_shown(value)}")


def _number_field(meta: dict, key: str, low: float, high: float) -> None:
    value = meta.get(key)
    if not _is_number(value) or not low <= value <= high:
        raise ValueError(f"the session file's {key!r} must be a number from {low:g} to "
                         f"{high:g}, got {_shown(value)}")


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:40] + "..."


def _check_meta(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ValueError(f"not a session file: its format is not {FORMAT_NAME!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported session file version {_shown(meta.get('version'))} "
                         f"(this server reads version {FORMAT_VERSION})")
    if not isinstance(meta.get("spec"), dict):
        raise ValueError("the session file's 'spec' must be an object")
    if not isinstance(meta.get("id"), str):
        raise ValueError("the session file's 'id' must be text")
    _int_field(meta, "seed", 0, MAX_SEED)
    _int_field(meta, "step", 0, MAX_COUNT)
    _int_field(meta, "cursor", 0, MAX_COUNT)
    _int_field(meta, "positive_class", 0, 9, optional=True)
    _number_field(meta, "created_at", 0, MAX_TIME)
    _number_field(meta, "last_used", 0, MAX_TIME)
    preset = meta.get("preset")
    if preset is not None and (not isinstance(preset, str) or len(preset) > MAX_PRESET_LENGTH):
        raise ValueError(f"the session file's 'preset' must be a name of at most "
                         f"{MAX_PRESET_LENGTH} characters")
    _check_evaluations(meta.get("evaluations"))
    if meta.get("optimizer_state") is not None:
        _check_optimizer_state(meta["optimizer_state"])
    return meta


def _check_evaluations(evaluations: Any) -> None:
    if not isinstance(evaluations, list):
        raise ValueError("the session file's 'evaluations' must be a list")
    for evaluation in evaluations:
        if not isinstance(evaluation, dict) or set(evaluation) != EVALUATION_KEYS:
            raise ValueError(f"each evaluation in the session file must have exactly the keys "
                             f"{', '.join(sorted(EVALUATION_KEYS))}")
        _int_field(evaluation, "step", 0, MAX_COUNT)
        _int_field(evaluation, "samples", 1, MAX_COUNT)
        _number_field(evaluation, "accuracy", 0, 1)
        _number_field(evaluation, "loss", 0, math.inf)
        if evaluation["split"] != "test":
            raise ValueError("an evaluation in the session file is not of the test split")


def _check_optimizer_state(tree: Any) -> None:
    pairs = tree.get("__dict__") if isinstance(tree, dict) and set(tree) == {"__dict__"} else None
    if not isinstance(pairs, list) or not all(
            isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
            for pair in pairs):
        raise ValueError("the session file's optimizer state is malformed")
    state = dict(pairs)
    if len(state) != len(pairs):
        raise ValueError("the session file's optimizer state repeats a key")
    name = state.get("name")
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"the session file's optimizer {_shown(name)} is not one of "
                         f"{', '.join(OPTIMIZERS)}")
    hyper = OPTIMIZERS[name].hyper_names
    _int_field(state, "steps", 0, MAX_COUNT)
    _number_field(state, "learning_rate", 5e-324, math.inf)
    ranges = {"momentum": (0, 1), "beta1": (0, 1), "beta2": (0, 1)}
    for key in hyper:
        if key == "eps":
            _number_field(state, "eps", MIN_ADAM_EPS, 1)
        else:
            low, high = ranges[key]
            _number_field(state, key, low, high)
            if state[key] >= high:
                raise ValueError(f"the session file's {key!r} must be less than {high}")
    for key, value in state.items():
        if key in ("name", "steps", "learning_rate", *hyper):
            continue
        parts = key.split(".")
        if (len(parts) != 4 or parts[0] != "slot" or not parts[1].isdigit()
                or parts[2] not in ("W", "b") or parts[3] not in OPTIMIZER_SLOTS[name]):
            raise ValueError(f"the session file's optimizer state has an unknown entry "
                             f"{_shown(key)}")
        if (not isinstance(value, dict) or set(value) != {"__array__", "scalar"}
                or not isinstance(value["__array__"], str)
                or not value["__array__"].startswith("opt/") or value["scalar"] is not False):
            raise ValueError(f"the session file's optimizer entry {_shown(key)} must refer to "
                             "one of its arrays")


# --- 4. the decoded arrays ---------------------------------------------------------------------

def _check_optimizer_arrays(session: Session) -> None:
    optimizer = session.optimizer
    if optimizer is None:
        return
    weights = session.network.state_dict()
    for key, slot in optimizer.slots.items():
        param = weights.get(key.rsplit(".", 1)[0])
        if param is None:
            raise ValueError(f"the session file's optimizer state {key!r} belongs to no weight")
        if slot.shape != param.shape or slot.dtype != param.dtype:
            raise ValueError(f"the session file's optimizer state {key!r} has shape {slot.shape} "
                             f"and dtype {slot.dtype}; its weight has {param.shape} "
                             f"{param.dtype}")
        if not np.isfinite(slot).all():
            raise ValueError(f"the session file's optimizer state {key!r} holds NaN or infinite "
                             "values")


def _check_positive_class(session: Session) -> None:
    outputs = session.network.output_size
    if outputs == 1 and session.positive_class is None:
        raise ValueError("the session file's network has one output but no 'positive_class'")
    if outputs != 1 and session.positive_class is not None:
        raise ValueError("the session file gives a 'positive_class' to a network with "
                         f"{outputs} outputs")


def _cut_history(session: Session, max_history: int) -> None:
    history = session.history
    if not all(0 <= step <= MAX_COUNT for step in history.steps):
        raise ValueError(f"the session file's history/steps must lie in 0..{MAX_COUNT:,}")
    for name, column in (("loss", history.loss), ("accuracy", history.accuracy)):
        if not all(math.isfinite(value) for value in column):
            raise ValueError(f"the session file's history/{name} holds NaN or infinite values")
    if len(history.steps) > max_history:
        del history.steps[:-max_history], history.loss[:-max_history]
        del history.accuracy[:-max_history]
    if len(history.evaluations) > max_history:
        del history.evaluations[:-max_history]
