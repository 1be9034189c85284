"""A session store in Redis, for server processes on several hosts behind one load balancer.

It keeps the SQLite store's guarantees (``app/persistence.py``), with Redis in place of the file:

- One hash per session holds the ``app.session_codec`` bytes (the export format), the step and a
  version. Every save is a compare-and-set in one Lua script (atomic in Redis): it writes only if
  the version is still the one this copy was loaded at, and increments it. An update computed on
  an outdated copy, such as a step racing one on another host, is refused with 409
  (``SessionConflict``) and nothing is lost or overwritten.
- Sessions outlive every server process: they live in Redis, not in a process. (Redis's own
  persistence, ``appendonly yes``, makes them outlive a Redis restart too; see the README's
  "More than one machine".)
- The session count cap holds across processes: a sorted set of ids scored by last use is
  counted in the same script that adds a session.
- Idle expiry: every use of a session (``get``, ``save``) resets its key's time to live to the
  idle limit, on Redis's clock (hosts' clocks never matter), so Redis drops idle sessions itself;
  ``expire_idle`` also clears their ids from the sorted set. A session is only "in use" for
  Redis while a request touches it, so a single request running longer than the idle limit
  would lose its session (requests are bounded to about a minute; the limit is an hour).

A session's last traced input (the PyTorch export's input) is kept in fields of its own in the
session's hash (``input_meta``, ``input_x``, ``input_target``): a trace writes those alone, a save
writes them with the session, and loading or exporting a session reads them.

Each process keeps the sessions it has loaded in memory, as the SQLite store does: routes hold
``session.lock`` on the live object, a copy is reloaded when another process saved since, and
the memory cap unloads least recently used idle copies (``sessions_to_unload``).

Session ids reach Redis only inside key names built here from validated ids.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from app.persistence import SessionConflict, overlay_last_input, sessions_to_unload
from app.security import SESSION_ID
from app.session_codec import (
    LAST_INPUT_FIELDS,
    decode_session,
    encode_session,
    last_input_record,
)
from app.sessions import Session
from app.store import SessionNotFound, SessionStore, StoreFull
from app.training import Refused

log = logging.getLogger(__name__)

# Lua helpers shared by the scripts: Redis's clock in milliseconds, and "this session was used
# now" (time to live reset, sorted-set score updated).
_LUA_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function mark_used(index, key, id, idle_ms)
  redis.call('PEXPIRE', key, idle_ms)
  redis.call('ZADD', index, now_ms(), id)
end
"""

# KEYS: index, session key. ARGV: id, data, step, idle ms, max sessions, evict-idle ms, key
# prefix. When full, the least recently used session idle for the evict-idle time makes room.
# {1, evicted id or ""} if added, {0} if full.
_ADD = _LUA_PRELUDE + """
local idle_ms = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now_ms() - idle_ms))
local evicted = ''
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #oldest == 0 or tonumber(oldest[2]) >= now_ms() - tonumber(ARGV[6]) then return {0} end
  evicted = oldest[1]
  redis.call('DEL', ARGV[7] .. evicted)
  redis.call('ZREM', KEYS[1], evicted)
end
redis.call('HSET', KEYS[2], 'data', ARGV[2], 'step', ARGV[3], 'version', 0)
mark_used(KEYS[1], KEYS[2], ARGV[1], idle_ms)
return {1, evicted}
"""

# KEYS: index, session key. ARGV: id, idle ms, "1" to also read the data.
# {version} or {version, data, input_meta, input_x, input_target} (the last input's fields are
# false when no input was recorded); nil when the session does not exist (deleted or expired).
_TOUCH = _LUA_PRELUDE + """
local version = redis.call('HGET', KEYS[2], 'version')
if not version then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return false
end
mark_used(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]))
if ARGV[3] == '1' then
  local stored = redis.call('HMGET', KEYS[2], 'data', 'input_meta', 'input_x', 'input_target')
  return {version, stored[1], stored[2], stored[3], stored[4]}
end
return {version}
"""

# KEYS: index, session key. ARGV: id, expected version, data, step, idle ms, and the last
# input's three fields when the session has one.
# The new version; -1 if the session is gone, -2 if another process saved since.
_SAVE = _LUA_PRELUDE + """
local version = redis.call('HGET', KEYS[2], 'version')
if not version then return -1 end
version = tonumber(version)
if version ~= tonumber(ARGV[2]) then return -2 end
redis.call('HSET', KEYS[2], 'data', ARGV[3], 'step', ARGV[4], 'version', version + 1)
if #ARGV >= 8 then
  redis.call('HSET', KEYS[2], 'input_meta', ARGV[6], 'input_x', ARGV[7], 'input_target', ARGV[8])
end
mark_used(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[5]))
return version + 1
"""

# KEYS: session key. ARGV: the last input's three fields. Written only while the session
# exists, so a deleted or expired one is not brought back as a hash without a session.
_REMEMBER_INPUT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'input_meta', ARGV[1], 'input_x', ARGV[2], 'input_target', ARGV[3])
return 1
"""

# KEYS: index. ARGV: idle ms, key prefix. Removes the ids idle past the limit (and their keys,
# in case Redis has not dropped them yet); returns those ids.
_EXPIRE = _LUA_PRELUDE + """
local deadline = '(' .. (now_ms() - tonumber(ARGV[1]))
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', deadline)
for _, id in ipairs(expired) do redis.call('DEL', ARGV[2] .. id) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', deadline)
return expired
"""


def _record_fields(session: Session) -> list[bytes]:
    """The session's last input as the hash's last-input fields, in ``LAST_INPUT_FIELDS``
    order (the scripts' arguments)."""
    record = last_input_record(session.last_input)
    return [record[name] for name in LAST_INPUT_FIELDS]


class StoreUnavailable(Refused):
    """Redis did not answer; the request changed nothing that was saved."""

    def __init__(self) -> None:
        super().__init__("the session store is not reachable right now; nothing was saved. "
                         "Try again in a moment", status_code=503)


class RedisSessionStore(SessionStore):
    def __init__(
        self,
        client: Any,
        *,
        key_prefix: str,
        max_sessions: int,
        max_bytes: int,
        idle_seconds: float,
        evict_idle_seconds: float,
        max_file_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``client``: a ``redis.Redis`` (thread-safe: it holds a connection pool)."""
        from redis.exceptions import RedisError

        self._client = client
        self._redis_error = RedisError
        # One hash tag for every key: a Redis Cluster keeps them in one slot, which the
        # scripts touching the index and a session key together need.
        self._key_base = "{" + key_prefix + "}:"
        self._index = self._key_base + "index"
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds
        self._idle_ms = max(1, int(idle_seconds * 1000))
        self.evict_idle_seconds = evict_idle_seconds
        self.max_file_bytes = max_file_bytes
        self._clock = clock
        self._loaded: dict[str, Session] = {}
        # As in the SQLite store: the stored version each live copy was loaded or saved at.
        self._versions: WeakKeyDictionary[Session, int] = WeakKeyDictionary()
        self._mutex = threading.RLock()
        self._add = client.register_script(_ADD)
        self._touch = client.register_script(_TOUCH)
        self._save = client.register_script(_SAVE)
        self._expire = client.register_script(_EXPIRE)
        self._remember_input = client.register_script(_REMEMBER_INPUT)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> "RedisSessionStore":
        """A store on the Redis server at ``url``; fails now if it does not answer."""
        try:
            import redis
        except ImportError:
            raise RuntimeError(
                "the Redis session store needs the redis package: "
                "python3 -m pip install 'cnn-backprop-viz[redis]'") from None
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30,
                                      health_check_interval=30)
        try:
            client.ping()
        except redis.RedisError as error:
            where = client.connection_pool.connection_kwargs
            raise RuntimeError(
                f"cannot reach the Redis session store at {where.get('host')}:"
                f"{where.get('port')} (database {where.get('db', 0)}): {error}") from None
        return cls(client, **options)

    # --- the SessionStore interface ----------------------------------------------------------

    def add(self, session: Session) -> None:
        session.last_used = self._clock()
        data = encode_session(session)
        with self._mutex:
            unloaded = sessions_to_unload(self._loaded.values(), session.memory_bytes(),
                                          self.max_bytes, self._clock())
            added = self._redis(self._add, keys=[self._index, self._key(session.id)],
                                args=[session.id, data, session.step, self._idle_ms,
                                      self.max_sessions, int(self.evict_idle_seconds * 1000),
                                      self._key("")])
            if not added[0]:
                raise StoreFull.sessions(self.max_sessions, self.evict_idle_seconds)
            evicted = added[1].decode() if isinstance(added[1], bytes) else added[1]
            if evicted:
                self._loaded.pop(evicted, None)
                log.info("session %s evicted (idle) to make room for a new one", evicted)
            for copy in unloaded:
                del self._loaded[copy.id]
            self._loaded[session.id] = session
            self._versions[session] = 0

    def get(self, session_id: str) -> Session:
        if not SESSION_ID.fullmatch(session_id):
            raise SessionNotFound(session_id)
        with self._mutex:
            session = self._loaded.get(session_id)
            if session is not None and session.lock.locked():
                # In use here: hand out this copy whatever Redis holds; the save that ends
                # that request tells whether it was still current.
                self._touch_locked(session_id, with_data=False)
            else:
                session = self._fetch_locked(session_id, session)
            session.last_used = self._clock()
            return session

    def delete(self, session_id: str) -> None:
        if not SESSION_ID.fullmatch(session_id):
            raise SessionNotFound(session_id)
        with self._mutex:
            self._loaded.pop(session_id, None)
            pipeline = self._client.pipeline(transaction=True)
            pipeline.delete(self._key(session_id))
            pipeline.zrem(self._index, session_id)
            deleted, _ = self._redis(pipeline.execute)
        if not deleted:
            raise SessionNotFound(session_id)

    def save(self, session: Session) -> None:
        session.last_used = self._clock()
        data = encode_session(session)
        with self._mutex:
            version = self._versions.get(session, 0)
        # Outside the store-wide mutex, as the SQLite store's commit: Redis may sync its
        # append-only file before answering, and other sessions' requests need not wait for it.
        # The caller holds session.lock, so this copy's version cannot change meanwhile.
        last_input = [] if session.last_input is None else _record_fields(session)
        result = self._redis(self._save, keys=[self._index, self._key(session.id)],
                             args=[session.id, version, data, session.step, self._idle_ms,
                                   *last_input])
        with self._mutex:
            if result >= 0:
                self._versions[session] = result
                self._loaded.setdefault(session.id, session)
                return
            if result == -1:
                self._loaded.pop(session.id, None)
                return  # deleted or expired meanwhile: it stays gone
            if self._loaded.get(session.id) is session:
                del self._loaded[session.id]  # outdated: the next request reads the saved one
        raise SessionConflict(session.id)

    def remember_input(self, session: Session) -> None:
        if session.last_input is not None:
            self._redis(self._remember_input, keys=[self._key(session.id)],
                        args=_record_fields(session))

    def refresh_last_input(self, session: Session) -> None:
        overlay_last_input(session, self._redis(
            self._client.hmget, self._key(session.id), *LAST_INPUT_FIELDS))

    def ids(self) -> list[str]:
        with self._mutex:
            self._expire_locked()
            return [member.decode() for member in self._redis(self._client.zrange,
                                                              self._index, 0, -1)]

    def expire_idle(self) -> list[str]:
        with self._mutex:
            return self._expire_locked()

    def close(self) -> None:
        """Forget the loaded copies and close the connections (they reopen if used again)."""
        with self._mutex:
            self._loaded.clear()
            try:
                self._client.connection_pool.disconnect()
            except self._redis_error:
                pass

    # --- beyond the interface ------------------------------------------------------------------

    def loaded_ids(self) -> list[str]:
        """Ids of the sessions this process holds in memory."""
        with self._mutex:
            return list(self._loaded)

    # --- internals ---------------------------------------------------------------------------

    def _key(self, session_id: str) -> str:
        return f"{self._key_base}session:{session_id}"

    def _redis(self, command: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except self._redis_error as error:
            log.error("the Redis session store failed: %s", error)
            raise StoreUnavailable() from error

    def _touch_locked(self, session_id: str, *, with_data: bool) -> list:
        """Mark the session used in Redis; its ``[version]`` or ``[version, data]``. Raises
        ``SessionNotFound`` (dropping any loaded copy) when Redis no longer has it."""
        reply = self._redis(self._touch, keys=[self._index, self._key(session_id)],
                            args=[session_id, self._idle_ms, "1" if with_data else "0"])
        if reply is None:
            self._loaded.pop(session_id, None)
            raise SessionNotFound(session_id)
        return [int(reply[0]), *reply[1:]]

    def _fetch_locked(self, session_id: str, held: Session | None) -> Session:
        """The current copy: ``held`` if Redis still has its version, else the stored one."""
        # A held copy is usually current: then the version alone is read, not the data.
        reply = self._touch_locked(session_id, with_data=held is None)
        if held is not None:
            if self._versions.get(held) == reply[0]:
                return held
            del self._loaded[session_id]  # another process saved since: read its copy
            reply = self._touch_locked(session_id, with_data=True)
        version, data, *last_input = reply
        try:
            session = decode_session(data, max_bytes=self.max_file_bytes)
        except ValueError as error:
            # Only damage to the stored bytes can get here; the key is kept for inspection.
            log.error("session %s is stored but cannot be decoded: %s", session_id, error)
            raise SessionNotFound(session_id) from None
        overlay_last_input(session, last_input)
        for copy in sessions_to_unload(self._loaded.values(), session.memory_bytes(),
                                       self.max_bytes, self._clock()):
            del self._loaded[copy.id]
        self._loaded[session_id] = session
        self._versions[session] = version
        return session

    def _expire_locked(self) -> list[str]:
        expired = [member.decode() for member in self._redis(
            self._expire, keys=[self._index], args=[self._idle_ms, self._key("")])]
        for session_id in expired:
            self._loaded.pop(session_id, None)
        return expired
