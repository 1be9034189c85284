"""Shared objects handed to routes through ``Depends``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request

from app.sessions import Session
from app.settings import Settings
from app.store import SessionStore


def get_store(request: Request) -> SessionStore:
    return request.app.state.store


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


StoreDep = Annotated[SessionStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


@contextmanager
def locked_session(store: SessionStore, session_id: str, *, save: bool) -> Iterator[Session]:
    """The session with its lock held for the whole block; saved at the end if the block
    completed and ``save`` is set (a refused request raises, so nothing is saved)."""
    session = store.get(session_id)
    with session.lock:
        yield session
        if save:
            store.save(session)
