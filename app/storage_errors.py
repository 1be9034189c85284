"""What a client hears when the session store cannot write: a full disk is a 507, any other
failure of the database a 503, both in plain words and never a 500.

Nothing acknowledged is lost: a save is one SQLite transaction, so a write the disk refuses is
rolled back and the row keeps the last version a client was told about, and the session in
memory is put back to that same version (``app.deps.locked_session``). The request that failed
was never acknowledged; repeating it once there is room gives the same result.
"""

from __future__ import annotations

import errno
import logging
import sqlite3

from fastapi import FastAPI, Request

from app.serialize import FastJSONResponse

logger = logging.getLogger("cnnviz")

# SQLite reports a write refused for want of space as SQLITE_FULL; an OSError with one of these
# can come from code that writes files itself.
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
FULL_DETAIL = ("the server has run out of disk space, so this change was not saved; the session "
               "is as it was before this request. Try again later")
UNAVAILABLE_DETAIL = ("the server could not read or write its saved sessions just now; nothing "
                      "was changed. Try again shortly")


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF == sqlite3.SQLITE_FULL
        return "full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


async def _on_storage_error(request: Request, exc: sqlite3.Error) -> FastJSONResponse:
    if is_disk_full(exc):
        logger.error("disk full on %s %s: %s", request.method, request.url.path, exc)
        return FastJSONResponse({"detail": FULL_DETAIL}, status_code=507,
                                headers={"Retry-After": "60"})
    logger.error("session database error on %s %s: %s", request.method, request.url.path, exc)
    return FastJSONResponse({"detail": UNAVAILABLE_DETAIL}, status_code=503,
                            headers={"Retry-After": "5"})


def install_storage_errors(app: FastAPI) -> None:
    app.add_exception_handler(sqlite3.Error, _on_storage_error)
