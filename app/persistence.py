"""A session store that survives restarts: SQLite in the data folder, one row per session.

Each row holds the session as ``app.session_codec`` bytes (the same format as export/import), so
a stored session and an exported one are the same thing. Every ``save`` is one SQLite
transaction in WAL mode with ``synchronous=FULL``: a crash or power cut in the middle of a write
leaves the previous version of the row intact, never a half-written one.

Sessions are loaded lazily: after a restart nothing is read until a request names an id. Loaded
sessions are held in memory (routes take ``session.lock`` on the live object); the memory cap
counts only loaded sessions, and when it is reached the least recently used idle ones are
unloaded, which loses nothing because they are on disk. The session count cap counts every
stored session, and sessions idle past the idle limit are deleted from disk as well, so neither
memory nor disk grows without bound.

Several server processes (``cnnviz --workers N``) may share the database. Each row carries a
version that every save increments only if it still holds the version its copy was loaded at: a
request sees another process's newer save (the copy is reloaded when idle), and an update made
to an outdated copy is refused with 409 rather than overwriting someone else's step.

A save's commit (``synchronous=FULL``: an fsync, ~8 ms here) runs on a connection of its own
under a write lock, not under the store-wide mutex that every ``get`` takes, so reads of other
sessions never wait behind a disk sync. The version check stays inside the ``UPDATE`` (atomic in
SQLite), and the save still returns only after its commit is durable.

A session's last traced input (the PyTorch export's input) has a small row of its own in
``last_inputs``: a trace writes that row alone, on a connection with ``synchronous=NORMAL`` (no
fsync: losing the newest traced input to a power cut costs nothing but which input the export
shows, while a whole-session save per trace cost more than the trace). A save writes it too, in
the session's transaction, so the row is always the newest input: loading a session and
exporting one read it. A trigger deletes it with its session.

The database path is built from the data folder alone; session ids only ever reach SQLite as
bound parameters, never a file name.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from weakref import WeakKeyDictionary

from app.session_codec import (
    LAST_INPUT_FIELDS,
    decode_session,
    encode_session,
    last_input_record,
    read_last_input_record,
)
from app.security import SESSION_ID
from app.sessions import Session
from app.settings import Settings
from app.store import (
    DEFAULT_EVICT_IDLE_SECONDS,
    InMemorySessionStore,
    SessionNotFound,
    SessionStore,
    StoreFull,
    describe_bytes,
)
from app.training import Refused

DATABASE_NAME = "sessions.sqlite3"
# A session used within this many seconds is not unloaded to make room: the request that just
# fetched it may not hold its lock yet.
UNLOAD_GRACE_SECONDS = 5.0

log = logging.getLogger(__name__)


def sessions_to_unload(loaded: Iterable[Session], needed: int, max_bytes: int,
                       now: float) -> list[Session]:
    """The least recently used idle sessions to drop from memory so that ``needed`` more bytes
    fit ``max_bytes``; raises ``StoreFull`` when even all idle ones would not make room. Shared
    by the stores that keep loaded copies of sessions stored elsewhere (SQLite, Redis)."""
    loaded = list(loaded)
    used = sum(s.memory_bytes() for s in loaded)
    if used + needed <= max_bytes:
        return []
    grace = now - UNLOAD_GRACE_SECONDS
    candidates = sorted(
        (s for s in loaded if s.last_used < grace and not s.lock.locked()),
        key=lambda s: s.last_used,
    )
    unloaded = []
    for session in candidates:
        if used + needed <= max_bytes:
            break
        used -= session.memory_bytes()
        unloaded.append(session)
    if used + needed > max_bytes:
        raise StoreFull(
            "max_store_bytes",
            max_bytes,
            f"the server's memory for sessions is taken by sessions in use: this one needs "
            f"{describe_bytes(needed)}, and {describe_bytes(used)} of "
            f"{describe_bytes(max_bytes)} are held; try again in a few seconds",
        )
    return unloaded


def overlay_last_input(session: Session, fields: Sequence[bytes | None] | None) -> None:
    """Set ``session.last_input`` from a store's last-input record (``LAST_INPUT_FIELDS``, as
    read; None or Nones: no input was recorded apart from the session's bytes). Shared by the
    stores that keep the record (SQLite, Redis)."""
    if not fields or fields[0] is None:
        return
    try:
        session.last_input = read_last_input_record(
            session.network, dict(zip(LAST_INPUT_FIELDS, fields)))
    except ValueError as error:
        # Only damage to the stored bytes can get here; the session's own copy stands.
        log.error("session %s: %s", session.id, error)


class SessionConflict(Refused):
    """The session was saved by another server process after this copy was loaded."""

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"session {session_id!r} was changed by another server process while this request "
            "ran; nothing was saved. Reload it and try again", status_code=409)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    step INTEGER NOT NULL,
    last_used REAL NOT NULL,
    saved_at REAL NOT NULL,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS last_inputs (
    id TEXT PRIMARY KEY,
    input_meta BLOB NOT NULL,
    input_x BLOB NOT NULL,
    input_target BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS last_input_goes_with_its_session AFTER DELETE ON sessions
BEGIN
    DELETE FROM last_inputs WHERE id = old.id;
END;
"""
# Records the input only while the session exists (a deleted one stays deleted).
_WRITE_LAST_INPUT = (
    "INSERT INTO last_inputs (id, input_meta, input_x, input_target) "
    "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?) "
    "ON CONFLICT (id) DO UPDATE SET input_meta = excluded.input_meta, "
    "input_x = excluded.input_x, input_target = excluded.input_target")


# How long opening the database retries while other processes open it too (see _prepare).
OPEN_RETRY_SECONDS = 15.0


def _prepare(connection: sqlite3.Connection, synchronous: str) -> None:
    """WAL mode, the durability asked and the tables, on a new connection. Server processes
    started together on a new database race to switch it to WAL: each holds a read lock and
    needs the database to itself, so SQLite fails one of them at once with "database is
    locked" (waiting could never end) instead of calling the busy handler. Every step is
    idempotent, so the loser tries again shortly, for up to ``OPEN_RETRY_SECONDS``; before,
    about one start in fifty of six processes on a new database lost a process this way."""
    deadline = time.monotonic() + OPEN_RETRY_SECONDS
    pause = 0.005
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={synchronous}")
            connection.executescript(_SCHEMA)
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


def _is_free(lock: threading.RLock) -> bool:
    """Whether no other thread holds ``lock`` (an RLock has no ``locked()``)."""
    if not lock.acquire(blocking=False):
        return False
    lock.release()
    return True


class SQLiteSessionStore(SessionStore):
    def __init__(
        self,
        data_dir: Path,
        *,
        max_sessions: int,
        max_bytes: int,
        idle_seconds: float,
        max_file_bytes: int,
        evict_idle_seconds: float = DEFAULT_EVICT_IDLE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(data_dir) / DATABASE_NAME
        self.evict_idle_seconds = evict_idle_seconds
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds
        self.max_file_bytes = max_file_bytes
        self._clock = clock
        self._loaded: dict[str, Session] = {}
        # The row version each live copy was loaded or last saved at, per copy (not per id):
        # a copy replaced by a reload keeps its old version and cannot overwrite the new one.
        self._versions: WeakKeyDictionary[Session, int] = WeakKeyDictionary()
        # _mutex guards the in-memory state (_loaded, _versions) and the shared connection.
        # _write_lock serialises this process's commits (SQLite allows one writer at a time, and
        # waiting here beats SQLite's sleep-and-retry busy handler); lock order: _mutex, then
        # _write_lock, never the other way round.
        self._mutex = threading.RLock()
        self._write_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection: sqlite3.Connection | None = None
        self._save_connection: sqlite3.Connection | None = None
        self._input_connection: sqlite3.Connection | None = None
        with self._mutex:
            self._db.execute("SELECT 1")  # a data folder that cannot hold the database fails now

    # --- the SessionStore interface ----------------------------------------------------------

    def add(self, session: Session) -> None:
        session.last_used = self._clock()
        data = encode_session(session)
        with self._mutex:
            self._expire_locked()
            self._make_room_locked(session.memory_bytes())
            evicted = None
            with self._write_lock, self._db:
                # Count, make room and insert in one write transaction: server processes sharing
                # the database take turns here, so together they never pass max_sessions.
                self._db.execute("BEGIN IMMEDIATE")
                (stored,) = self._db.execute("SELECT COUNT(*) FROM sessions").fetchone()
                if stored >= self.max_sessions:
                    evicted = self._evictable_locked()
                    if evicted is None:
                        raise StoreFull.sessions(self.max_sessions, self.evict_idle_seconds)
                    self._db.execute("DELETE FROM sessions WHERE id = ?", (evicted,))
                self._db.execute(
                    "INSERT INTO sessions (id, data, step, last_used, saved_at, version) "
                    "VALUES (?, ?, ?, ?, ?, 0)",
                    (session.id, data, session.step, session.last_used, self._clock()),
                )
            if evicted is not None:
                self._loaded.pop(evicted, None)
                log.info("session %s evicted (idle) to make room for a new one", evicted)
            self._loaded[session.id] = session
            self._versions[session] = 0

    def _evictable_locked(self) -> str | None:
        """The least recently used session idle for ``evict_idle_seconds`` (its copy in memory,
        if loaded, knows its latest use), or None."""
        deadline = self._clock() - self.evict_idle_seconds
        candidates = []
        for session_id, stored_last_used in self._db.execute(
                "SELECT id, last_used FROM sessions"):
            loaded = self._loaded.get(session_id)
            if loaded is not None and loaded.lock.locked():
                continue
            last_used = max(stored_last_used, loaded.last_used if loaded else 0.0)
            if last_used < deadline:
                candidates.append((last_used, session_id))
        return min(candidates)[1] if candidates else None

    def serves_without_waiting(self, session_id: str) -> bool:
        # Loaded here, and neither the store nor its writer busy (a save's commit waits ~8 ms
        # for the disk); the version check in get is one read of the local database.
        return (session_id in self._loaded and not self._write_lock.locked()
                and _is_free(self._mutex))

    def get(self, session_id: str) -> Session:
        if not SESSION_ID.fullmatch(session_id):
            raise SessionNotFound(session_id)
        with self._mutex:
            session = self._loaded.get(session_id)
            if session is not None:
                if self._idle_past_limit(session.last_used) and not session.lock.locked():
                    self._delete_locked(session_id)
                    raise SessionNotFound(session_id)
                row = self._db.execute(
                    "SELECT version FROM sessions WHERE id = ?", (session_id,)).fetchone()
                if row is None:  # deleted by another process
                    self._loaded.pop(session_id, None)
                    raise SessionNotFound(session_id)
                if row[0] != self._versions.get(session) and not session.lock.locked():
                    del self._loaded[session_id]  # another process saved since: read its copy
                    session = None
            if session is None:
                session = self._load_locked(session_id)
            session.last_used = self._clock()
            return session

    def delete(self, session_id: str) -> None:
        if not SESSION_ID.fullmatch(session_id):
            raise SessionNotFound(session_id)
        with self._mutex:
            if not self._delete_locked(session_id):
                raise SessionNotFound(session_id)

    def save(self, session: Session) -> None:
        session.last_used = self._clock()
        data = encode_session(session)
        with self._mutex:
            version = self._versions.get(session, 0)
        # The caller holds session.lock, so this copy's version cannot change meanwhile; the
        # UPDATE's version test refuses it if another process (or a reloaded copy) saved since.
        with self._write_lock:
            connection = self._save_db
            with connection:
                updated = connection.execute(
                    "UPDATE sessions SET data = ?, step = ?, last_used = ?, saved_at = ?, "
                    "version = version + 1 WHERE id = ? AND version = ?",
                    (data, session.step, session.last_used, self._clock(), session.id, version),
                ).rowcount
                if updated and session.last_input is not None:
                    self._write_last_input(connection, session)
        with self._mutex:
            if updated:
                self._versions[session] = version + 1
                if session.id not in self._loaded and self._stored(session.id):
                    # Unloaded meanwhile (only past the grace period): this is the newest. (A
                    # delete between the commit and here removed the row: it stays deleted.)
                    self._loaded[session.id] = session
                return
            if not self._stored(session.id):
                return  # deleted meanwhile: it stays deleted
            if self._loaded.get(session.id) is session:
                del self._loaded[session.id]  # outdated: the next request reads the saved one
        raise SessionConflict(session.id)

    def remember_input(self, session: Session) -> None:
        if session.last_input is None:
            return
        with self._write_lock:
            self._write_last_input(self._input_db, session)  # one statement: its own transaction

    def refresh_last_input(self, session: Session) -> None:
        with self._mutex:
            row = self._db.execute(
                "SELECT input_meta, input_x, input_target FROM last_inputs WHERE id = ?",
                (session.id,)).fetchone()
        overlay_last_input(session, row)

    def ids(self) -> list[str]:
        with self._mutex:
            self._expire_locked()
            return [row[0] for row in self._db.execute("SELECT id FROM sessions ORDER BY rowid")]

    def expire_idle(self) -> list[str]:
        with self._mutex:
            return self._expire_locked()

    def close(self) -> None:
        """Write the idle clocks out and close the database (it reopens if used again)."""
        with self._mutex:
            if self._connection is None:
                return
            self._record_last_used_locked(list(self._loaded.values()))
            self._loaded.clear()
            with self._write_lock:
                self._connection.close()
                self._connection = None
                for name in ("_save_connection", "_input_connection"):
                    if getattr(self, name) is not None:
                        getattr(self, name).close()
                        setattr(self, name, None)

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection for reads and for the writes made under ``_mutex``; reopened on demand
        after close() (an app can be started and stopped more than once in one process)."""
        if self._connection is None:
            self._connection = self._open()
        return self._connection

    @property
    def _save_db(self) -> sqlite3.Connection:
        """The connection ``save`` commits on, used only under ``_write_lock``."""
        if self._save_connection is None:
            self._save_connection = self._open()
        return self._save_connection

    @property
    def _input_db(self) -> sqlite3.Connection:
        """The connection a trace records its input on (no fsync; each statement its own
        transaction), used only under ``_write_lock``."""
        if self._input_connection is None:
            self._input_connection = self._open(synchronous="NORMAL", autocommit=True)
        return self._input_connection

    def _open(self, synchronous: str = "FULL", autocommit: bool = False) -> sqlite3.Connection:
        # Python's sqlite3 opens a transaction before each write; `with connection:` commits
        # (autocommit: no transaction is opened, each statement commits by itself).
        # A connection is shared by the request threads; a lock serialises its use.
        connection = sqlite3.connect(self.path, check_same_thread=False,
                                     **({"isolation_level": None} if autocommit else {}))
        _prepare(connection, synchronous)
        columns = {row[1] for row in connection.execute("PRAGMA table_info(sessions)")}
        if "version" not in columns:  # a database written before rows had versions
            connection.execute(
                "ALTER TABLE sessions ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
        return connection

    # --- beyond the interface ------------------------------------------------------------------

    def loaded_ids(self) -> list[str]:
        """Ids of the sessions currently held in memory (the rest are on disk only)."""
        with self._mutex:
            return list(self._loaded)

    def loaded_bytes(self) -> int:
        with self._mutex:
            return sum(s.memory_bytes() for s in self._loaded.values())

    # --- internals ---------------------------------------------------------------------------

    def _stored(self, session_id: str) -> bool:
        return self._db.execute(
            "SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is not None

    def _idle_past_limit(self, last_used: float) -> bool:
        return last_used < self._clock() - self.idle_seconds

    @staticmethod
    def _write_last_input(connection: sqlite3.Connection, session: Session) -> None:
        record = last_input_record(session.last_input)
        connection.execute(_WRITE_LAST_INPUT, (session.id, *(record[name] for name in
                                                              LAST_INPUT_FIELDS), session.id))

    def _load_locked(self, session_id: str) -> Session:
        row = self._db.execute(
            "SELECT data, last_used, version, input_meta, input_x, input_target "
            "FROM sessions LEFT JOIN last_inputs USING (id) WHERE id = ?", (session_id,)
        ).fetchone()
        if row is None:
            raise SessionNotFound(session_id)
        data, last_used, version, *last_input = row
        if self._idle_past_limit(last_used):
            self._delete_locked(session_id)
            raise SessionNotFound(session_id)
        try:
            session = decode_session(data, max_bytes=self.max_file_bytes)
        except ValueError as error:
            # Only damage to the disk itself can get here; the row is kept for inspection.
            log.error("session %s is stored but cannot be decoded: %s", session_id, error)
            raise SessionNotFound(session_id) from None
        overlay_last_input(session, last_input)
        self._make_room_locked(session.memory_bytes())
        self._loaded[session_id] = session
        self._versions[session] = version
        return session

    def _make_room_locked(self, needed: int) -> None:
        """Unload least recently used idle sessions until ``needed`` more bytes fit the cap."""
        unloaded = sessions_to_unload(self._loaded.values(), needed, self.max_bytes,
                                      self._clock())
        self._record_last_used_locked(unloaded)
        for session in unloaded:
            del self._loaded[session.id]

    def _record_last_used_locked(self, sessions: list[Session]) -> None:
        # Reads refresh the idle clock in memory only; it reaches the disk when the session is
        # unloaded or the store closes, so a read-only session is not expired after a restart.
        if not sessions:
            return
        with self._write_lock, self._db:
            self._db.executemany(
                "UPDATE sessions SET last_used = MAX(last_used, ?) WHERE id = ?",
                [(s.last_used, s.id) for s in sessions],
            )

    def _delete_locked(self, session_id: str) -> bool:
        self._loaded.pop(session_id, None)
        with self._write_lock, self._db:
            return self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount > 0

    def _expire_locked(self) -> list[str]:
        deadline = self._clock() - self.idle_seconds
        busy_or_recent = {
            sid for sid, s in self._loaded.items() if s.lock.locked() or s.last_used >= deadline
        }
        candidates = [
            sid for (sid,) in self._db.execute(
                "SELECT id FROM sessions WHERE last_used < ?", (deadline,)
            )
        ]
        expired = [sid for sid in candidates if sid not in busy_or_recent]
        for sid in expired:
            self._delete_locked(sid)
        return expired


def build_store(settings: Settings) -> SessionStore:
    """The store ``settings.session_store`` names, with the settings' caps."""
    caps = {
        "max_sessions": settings.max_sessions,
        "max_bytes": settings.max_store_bytes,
        "idle_seconds": settings.session_idle_seconds,
        "evict_idle_seconds": settings.session_evict_idle_seconds,
    }
    if settings.session_store == "memory":
        return InMemorySessionStore(**caps)
    if settings.session_store == "redis":
        from app.redis_store import RedisSessionStore  # needs the optional redis package

        return RedisSessionStore.from_url(
            settings.redis_url, key_prefix=settings.redis_key_prefix,
            max_file_bytes=settings.max_session_file_bytes, **caps)
    return SQLiteSessionStore(
        settings.data_dir, max_file_bytes=settings.max_session_file_bytes, **caps
    )
