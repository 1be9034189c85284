"""The page's files under /static, answering a plain 404 when the folder is not installed.

Starlette's StaticFiles raises (a 500) when its folder is missing, and its message names the
folder's absolute path; the path is for the log, a visitor only needs to know the file is not
there."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles

logger = logging.getLogger("cnnviz")


class PageFiles(StaticFiles):
    async def check_config(self) -> None:
        try:
            await super().check_config()
        except RuntimeError as exc:
            logger.error("static files unavailable: %s", exc)
            raise HTTPException(404, "the page's files are not installed on this server") from None
