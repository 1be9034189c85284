"""Security headers on every response, and CORS only when the settings name allowed origins.

The page loads its scripts from this server only (its own modules and Plotly at
``/vendor/plotly.min.js``), so the policy allows scripts from 'self' and nothing else: no inline
script, no eval, no CDN. Styles also allow 'unsafe-inline' because Plotly inserts its own
``<style>`` rules at run time; images allow ``data:`` and ``blob:`` for Plotly's exports.
FastAPI's interactive docs (``/docs``, ``/redoc``) are pages made of an inline script and a CDN
bundle; they get a policy of their own that allows exactly that and nothing more, so the API
can still be explored when the machine is online.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

from fastapi import FastAPI, Path
from fastapi.middleware.cors import CORSMiddleware
from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What secrets.token_urlsafe(16) makes (app.sessions.new_session_id): 128 random bits, 22
# URL-safe characters. Anything else is refused by the router, before any store is asked.
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{22}")

PAGE_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
DOCS_CDN = "https://cdn.jsdelivr.net"
DOCS_POLICY = "; ".join([
    "default-src 'self'",
    f"script-src 'self' 'unsafe-inline' {DOCS_CDN}",
    f"style-src 'self' 'unsafe-inline' {DOCS_CDN}",
    "img-src 'self' data: https://fastapi.tiangolo.com",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
])
DOCS_PATHS = ("/docs", "/redoc")

COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}


def _encoded(headers: dict[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((name.lower().encode("latin-1"), value.encode("latin-1"))
                 for name, value in headers.items())


# Encoded once: a response gets them by one pass over its own header names.
PAGE_HEADERS = _encoded({**COMMON_HEADERS, "Content-Security-Policy": PAGE_POLICY})
DOCS_HEADERS = _encoded({**COMMON_HEADERS, "Content-Security-Policy": DOCS_POLICY})


class SecurityHeadersMiddleware:
    """Adds the headers above to every HTTP response that does not set them itself, errors
    included (pure ASGI, so it also covers responses sent by other middleware and streaming
    responses)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = DOCS_HEADERS if scope.get("path", "").startswith(DOCS_PATHS) else PAGE_HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [header for header in added if header[0] not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_security(app: FastAPI, *, cors_origins: Sequence[str]) -> None:
    """Add the middleware to ``app``. With no ``cors_origins`` (the default) no CORS header is
    ever sent, so browsers keep other sites' pages from reading the API's answers."""
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type"],
            allow_credentials=False,
            max_age=600,
        )
    # Added last, so it is the outermost layer and also sees the answers CORS sends itself.
    app.add_middleware(SecurityHeadersMiddleware)


class SessionIdConvertor(Convertor[str]):
    """Route paths write ``{session_id:session_id}``: a path whose id segment does not fit the
    pattern matches no session route at all (404 before any lookup), and cannot be mistaken
    for another route either (``/api/sessions/import`` is never a session id)."""

    regex = SESSION_ID.pattern

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("session_id", SessionIdConvertor())

SessionIdPath = Annotated[str, Path(pattern=f"^{SESSION_ID.pattern}$",
                                    description="a session id as returned on creation")]
