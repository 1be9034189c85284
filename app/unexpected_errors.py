"""The last resort: an exception no handler knows becomes a logged JSON 500, sent like any other
answer.

Starlette's own last resort (``ServerErrorMiddleware``) sits outside every middleware the app
adds and re-raises after answering, so its 500s carried none of the security headers and made
uvicorn close the connection, keep-alive or not. This middleware sits inside the security
headers and answers without re-raising: a bug costs one request, not the connection.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from app.middleware import ResponseTracker, send_json_error

logger = logging.getLogger("cnnviz")

INTERNAL_ERROR_DETAIL = "internal error; it has been logged"


class UnexpectedErrorMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = ResponseTracker(send)
        try:
            await self.app(scope, receive, response.send)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if response.started:
                raise  # half an answer is out: only closing the connection can say it failed
            await send_json_error(send, 500, INTERNAL_ERROR_DETAIL)
