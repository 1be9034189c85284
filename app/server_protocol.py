"""uvicorn's HTTP protocol with the two guards it lacks: slow clients time out, and the number
of open connections is bounded.

uvicorn times out idle keep-alive connections only. A client that sends its request a byte at a
time (headers or body) holds its connection, and a file descriptor, for as long as it likes;
enough of them exhaust the process's descriptors and nobody else is served. An ASGI application
cannot help: it is only called once the headers are complete. So ``cnnviz`` (``app.cli``) runs
uvicorn with this protocol class:

- from a request's first byte, its headers must be complete within ``header_timeout_seconds``,
  and then its body within ``body_timeout_seconds``; a request that is late gets a 408 (when no
  answer has started) and its connection is closed;
- a connection arriving while ``max_connections`` are open is closed at once (with a 503 that
  says the server is full), before it can hold anything.

A connection that has sent nothing at all is a request that has not begun: the header timer
starts when it is accepted, so it cannot sit idle either.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.serialize import dumps
from app.settings import get_settings

logger = logging.getLogger("cnnviz")

LATE_DETAIL = "the request took too long to arrive; the connection was closed"
FULL_DETAIL = "the server has too many open connections; try again shortly"


def _plain_response(status: bytes, detail: str) -> bytes:
    body = dumps({"detail": detail})
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout = settings.header_timeout_seconds
        self.body_timeout = settings.body_timeout_seconds
        self.max_connections = settings.max_connections
        self.arrival_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            logger.warning("refused a connection: %d are open", len(self.connections))
            transport.write(_plain_response(b"503 Service Unavailable", FULL_DETAIL))
            transport.close()
            return
        self._expect_within(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.arrival_deadline is None:
            self._expect_within(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._expect_within(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_waiting()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # the keep-alive timer (uvicorn's) takes over until the next request begins
        self._stop_waiting()
        super().on_response_complete()

    def _expect_within(self, seconds: float) -> None:
        self._stop_waiting()
        self.arrival_deadline = self.loop.call_later(seconds, self._too_late)

    def _stop_waiting(self) -> None:
        if self.arrival_deadline is not None:
            self.arrival_deadline.cancel()
            self.arrival_deadline = None

    def _too_late(self) -> None:
        self.arrival_deadline = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:
            # the application has not taken the body yet: the client is not the slow one
            self._expect_within(self.body_timeout)
            return
        answering = self.cycle is not None and self.cycle.response_started
        if not answering:
            self.transport.write(_plain_response(b"408 Request Timeout", LATE_DETAIL))
        self.transport.close()
