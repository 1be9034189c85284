"""Refuse request bodies over the size limit with 413, before a route reads them into memory.

File uploads (multipart) may be as large as ``max_body_bytes``; every other body (JSON) has a much
smaller limit, ``max_json_body_bytes``: the largest valid JSON body (a 28x28 drawing, a spec,
a list of weight edits) is a few tens of kilobytes, and FastAPI parses and validates JSON on the
event loop, where megabytes of it would stall every other client."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.serialize import dumps


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the limit. It is an HTTPException so that
    FastAPI's body parsing re-raises it rather than turning it into a generic 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the file or request is larger than the limit of {size_in_words(limit)} "
                              "-- resize or compress it and try again")


def size_in_words(count: int) -> str:
    """A limit as a person says it: 8 MB for 8 MiB, 1.5 MB, 512 kB."""
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"


class BodySizeLimitMiddleware:
    """Checks ``Content-Length`` up front and counts the bytes of chunked bodies as they come."""

    def __init__(self, app: ASGIApp, max_body_bytes: int,
                 max_json_body_bytes: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_body_bytes = min(max_body_bytes, max_json_body_bytes or max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes if _is_upload(scope) else self.max_json_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, limit)
            return

        received = 0
        response = ResponseTracker(send)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, limited_receive, response.send)
        except BodyTooLarge:
            if response.started:
                raise
            await _send_413(send, limit)


def _is_upload(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return value.lower().startswith(b"multipart/form-data")
    return False


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, limit: int) -> None:
    await send_json_error(send, 413, BodyTooLarge(limit).detail, close=True)


async def send_json_error(send: Send, status: int, detail: str, *, close: bool = False) -> None:
    """A whole ``{"detail": ...}`` answer sent straight over ASGI (from middleware, where no
    Response class runs); ``close`` asks the client to drop the connection."""
    body = dumps({"detail": detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ResponseTracker:
    """Wraps ``send`` and remembers whether an answer has begun: after that, middleware that
    catches an error can no longer answer in its place."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)
