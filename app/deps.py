"""Shared objects handed to routes through ``Depends``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request

from engine.scratch import SCRATCH

from app.session_snapshot import SessionSnapshot
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
    completed and ``save`` is set. If anything fails (a refusal, running out of memory, a disk
    that cannot take the save), the session is put back exactly as it was and the engine's
    scratch memory on this thread is released, so the next request starts clean."""
    session = store.get(session_id)
    with session.lock:
        before = SessionSnapshot.of(session) if save else None
        try:
            yield session
            if save:
                store.save(session)
        except BaseException:
            if before is not None:
                before.restore(session)
            SCRATCH.clear()
            raise
