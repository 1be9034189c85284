"""Shared objects handed to routes through ``Depends``, the trace and step answers' query
parameters, and the session lock every route that reads or changes a session holds.

The dependencies are ``async def`` because they only read or parse: FastAPI runs a plain ``def``
dependency on a worker thread, one thread hop (~0.1 ms) per dependency per request."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import QueryParams

from engine.scratch import SCRATCH

from app.limits import WouldWait, on_event_loop
from app.serialize import LAYER_FIELDS, AnswerView, parse_fields
from app.session_snapshot import SessionSnapshot
from app.sessions import Session
from app.settings import Settings
from app.store import SessionStore


async def get_store(request: Request) -> SessionStore:
    return request.app.state.store


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


# What parse_fields accepts, said in the OpenAPI document: names separated by commas, spaces
# around them, empty entries ignored.
_FIELD_NAME = "(?:" + "|".join(LAYER_FIELDS) + ")"
FIELDS_PATTERN = f"^ *{_FIELD_NAME}? *(?:, *{_FIELD_NAME}? *)*$"


ANSWER_FORMATS = ("json", "safetensors")
_FORMAT_DESCRIPTION = (
    "json (the default), or safetensors: a binary file whose tensors are the answer's arrays "
    "named by their JSON path (layers.0.z, trace.layers.0.a, params_after.0.W, ...) and whose "
    "__metadata__ 'json' is the rest")
_FIELDS_DESCRIPTION = (
    "comma-separated subset of " + ", ".join(LAYER_FIELDS) + ": only these per-layer arrays "
    "are sent (in a step, params also brings params_before and params_after, grads brings "
    "batch_grads); the others are left out (their keys absent). Absent: all of them")
# The OpenAPI description of the query parameters ``answer_view`` reads, for the routes'
# ``openapi_extra`` (FastAPI adds these to the parameters it documents itself).
ANSWER_QUERY_OPENAPI = {"parameters": [
    {"name": "format", "in": "query", "required": False, "description": _FORMAT_DESCRIPTION,
     "schema": {"type": "string", "enum": list(ANSWER_FORMATS), "default": "json",
                "title": "Format"}},
    {"name": "fields", "in": "query", "required": False, "description": _FIELDS_DESCRIPTION,
     "schema": {"type": "string", "pattern": FIELDS_PATTERN, "title": "Fields",
                "examples": ["z,a,delta,grad_a,argmax"]}},
]}


def answer_view(request: Request) -> AnswerView:
    """How a trace or step answer is sent: the request's ``format`` and ``fields`` query
    parameters (``ANSWER_QUERY_OPENAPI``); a 422 naming the parameter when either is wrong.
    Read here rather than declared as FastAPI query parameters (or as a dependency): FastAPI's
    handling of the two cost a LeNet-5 trace request ~0.05 ms, a tenth of the engine's trace."""
    return _answer_view_of(request.scope["query_string"])


@lru_cache(maxsize=128)
def _answer_view_of(query_string: bytes) -> AnswerView:
    """Cached by the raw query (a page sends the same few, request after request; parsing one
    took ~0.01 ms); a wrong one raises, and is not cached."""
    query = QueryParams(query_string)
    answer_format = query.get("format", "json")
    if answer_format not in ANSWER_FORMATS:
        raise RequestValidationError([{
            "loc": ("query", "format"), "type": "literal_error", "input": answer_format,
            "msg": "Input should be " + " or ".join(f"'{name}'" for name in ANSWER_FORMATS)}])
    fields = query.get("fields")
    try:
        chosen = parse_fields(fields)
        if fields is not None and not re.fullmatch(FIELDS_PATTERN, fields):
            raise ValueError("fields is a comma-separated list of any of "
                             f"{', '.join(LAYER_FIELDS)}, with only spaces around them")
    except ValueError as error:
        raise RequestValidationError([{"loc": ("query", "fields"), "msg": str(error),
                                       "type": "value_error"}]) from None
    return AnswerView(answer_format, chosen)


def store_and_settings(request: Request) -> tuple[SessionStore, Settings]:
    """The app's session store and settings, for the training routes (the page's most frequent
    requests): read off the app rather than declared as ``StoreDep``/``SettingsDep``, which
    cost a trace request ~0.05 ms each, FastAPI's price for any dependency."""
    state = request.app.state
    return state.store, state.settings


StoreDep = Annotated[SessionStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


@contextmanager
def locked_session(store: SessionStore, session_id: str, *, save: bool) -> Iterator[Session]:
    """The session with its lock held for the whole block; saved at the end if the block
    completed and ``save`` is set. If anything fails (a refusal, running out of memory, a disk
    that cannot take the save), the session is put back exactly as it was and the engine's
    scratch memory on this thread is released, so the next request starts clean. On the event
    loop (quick work), ``WouldWait`` instead of waiting for the store or the session's lock."""
    waiting_allowed = not on_event_loop()
    if not (waiting_allowed or store.serves_without_waiting(session_id)):
        raise WouldWait
    session = store.get(session_id)
    if not session.lock.acquire(blocking=waiting_allowed):
        raise WouldWait
    try:
        before = SessionSnapshot.of(session) if save else None
        try:
            yield session
            if save:
                store.save(session)
        except WouldWait:
            raise  # raised before anything changed
        except BaseException:
            if before is not None:
                before.restore(session)
            SCRATCH.clear()
            raise
    finally:
        session.lock.release()
