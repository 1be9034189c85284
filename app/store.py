"""Where sessions live between requests.

``SessionStore`` is the interface the routes use; ``InMemorySessionStore`` keeps sessions in this
process (so with several uvicorn workers each worker has its own sessions). A persistent store
implements the same methods and can reuse ``app.session_codec`` to turn sessions into bytes.

Routes follow one protocol: ``get`` the session, take ``session.lock`` for the whole update,
mutate, then ``save`` it while still holding the lock. ``get`` refreshes the idle clock.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable, Iterator

from app.sessions import Session


class SessionNotFound(KeyError):
    """No session with that id (never existed, deleted, or expired after idling)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(session_id)
        self.session_id = session_id

    def __str__(self) -> str:
        return f"no session with id {self.session_id!r} (unknown, deleted or expired)"


# When the store is full, a session unused for this long makes room for a new one.
DEFAULT_EVICT_IDLE_SECONDS = 600.0


def describe_bytes(count: int) -> str:
    """A byte count the way a person says it: 5.7 GB, 256 MB, 12 kB."""
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"


class StoreFull(Exception):
    """Adding the session would exceed a cap; ``cap`` names the setting, ``limit`` its value."""

    def __init__(self, cap: str, limit: int, message: str) -> None:
        super().__init__(message)
        self.cap = cap
        self.limit = limit

    @classmethod
    def sessions(cls, limit: int, evict_idle_seconds: float | None) -> "StoreFull":
        """The refusal every store gives when ``limit`` sessions exist; ``evict_idle_seconds``
        for a store that evicts sessions idle that long before refusing."""
        recently = ("" if evict_idle_seconds is None else
                    f", all used in the last {evict_idle_seconds / 60:g} minutes")
        return cls("max_sessions", limit,
                   f"the server already holds its maximum of {limit} sessions{recently}; "
                   "delete one or try again later")


class SessionStore(abc.ABC):
    """Thread-safe mapping from id to ``Session`` with idle expiry and caps."""

    @abc.abstractmethod
    def add(self, session: Session) -> None:
        """Store a new session; raises ``StoreFull`` naming the cap it would break."""

    @abc.abstractmethod
    def get(self, session_id: str) -> Session:
        """The live session (refreshing its idle clock); raises ``SessionNotFound``."""

    def serves_without_waiting(self, session_id: str) -> bool:
        """Whether ``get(session_id)`` and ``remember_input`` would answer now, without loading
        the session, waiting for a lock another thread holds, or going over the network: what
        quick work on the event loop asks first (see ``app.limits.WouldWait``). A hint: the
        answer may change a moment later, which costs at most one short wait."""
        return False

    @abc.abstractmethod
    def delete(self, session_id: str) -> None:
        """Remove a session; raises ``SessionNotFound`` if it is not there."""

    @abc.abstractmethod
    def save(self, session: Session) -> None:
        """Record that ``session`` changed (called with ``session.lock`` held). A store that
        persists writes it out; saving a session that was deleted meanwhile does not revive it."""

    def remember_input(self, session: Session) -> None:
        """Record ``session.last_input`` (set by a trace; called with ``session.lock`` held) for
        every server process, without rewriting the session: a trace changes nothing else.
        Nothing to do where the live session is the only copy (this in-memory store)."""

    def refresh_last_input(self, session: Session) -> None:
        """Set ``session.last_input`` to the input recorded last for it by any server process
        (a trace elsewhere records only that; called with ``session.lock`` held)."""

    @abc.abstractmethod
    def ids(self) -> list[str]:
        """Ids of the sessions currently held (expired ones dropped first)."""

    @abc.abstractmethod
    def expire_idle(self) -> list[str]:
        """Drop sessions idle for longer than the idle limit; returns their ids."""

    def __iter__(self) -> Iterator[Session]:
        for session_id in self.ids():
            try:
                yield self.get(session_id)
            except SessionNotFound:
                continue

    def __len__(self) -> int:
        return len(self.ids())

    def close(self) -> None:
        """Release resources (nothing for the in-memory store)."""


class InMemorySessionStore(SessionStore):
    def __init__(
        self,
        *,
        max_sessions: int,
        max_bytes: int,
        idle_seconds: float,
        evict_idle_seconds: float = DEFAULT_EVICT_IDLE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.evict_idle_seconds = evict_idle_seconds
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._mutex = threading.Lock()

    def add(self, session: Session) -> None:
        with self._mutex:
            self._expire_locked()
            needed = session.memory_bytes()
            # Full: the least recently used sessions idle long enough make room, one by one.
            while (len(self._sessions) >= self.max_sessions
                   or sum(s.memory_bytes() for s in self._sessions.values()) + needed
                   > self.max_bytes):
                if not self._evict_one_locked():
                    break
            if len(self._sessions) >= self.max_sessions:
                raise StoreFull.sessions(self.max_sessions, self.evict_idle_seconds)
            used = sum(s.memory_bytes() for s in self._sessions.values())
            if used + needed > self.max_bytes:
                raise StoreFull(
                    "max_store_bytes",
                    self.max_bytes,
                    f"the server's memory for sessions is taken by sessions in use: this one "
                    f"needs {describe_bytes(needed)}, and {describe_bytes(used)} of "
                    f"{describe_bytes(self.max_bytes)} are held; delete one or try again later",
                )
            session.last_used = self._clock()
            self._sessions[session.id] = session

    def serves_without_waiting(self, session_id: str) -> bool:
        return not self._mutex.locked()

    def get(self, session_id: str) -> Session:
        with self._mutex:
            self._expire_locked()
            session = self._sessions.get(session_id)
            if session is None:
                raise SessionNotFound(session_id)
            session.last_used = self._clock()
            return session

    def delete(self, session_id: str) -> None:
        with self._mutex:
            if self._sessions.pop(session_id, None) is None:
                raise SessionNotFound(session_id)

    def save(self, session: Session) -> None:
        with self._mutex:
            if self._sessions.get(session.id) is session:
                session.last_used = self._clock()

    def ids(self) -> list[str]:
        with self._mutex:
            self._expire_locked()
            return list(self._sessions)

    def expire_idle(self) -> list[str]:
        with self._mutex:
            return self._expire_locked()

    def _evict_one_locked(self) -> bool:
        deadline = self._clock() - self.evict_idle_seconds
        idle = [s for s in self._sessions.values()
                if s.last_used < deadline and not s.lock.locked()]
        if not idle:
            return False
        del self._sessions[min(idle, key=lambda s: s.last_used).id]
        return True

    def _expire_locked(self) -> list[str]:
        deadline = self._clock() - self.idle_seconds
        expired = [
            sid
            for sid, s in self._sessions.items()
            # A session whose lock is held is in the middle of a request, hence not idle.
            if s.last_used < deadline and not s.lock.locked()
        ]
        for sid in expired:
            del self._sessions[sid]
        return expired
