"""Answer only under the names this server is meant to have: a defence against DNS rebinding.

A page on another site can point its own host name at 127.0.0.1 and then call this API from the
visitor's browser as if it were same-origin. The browser still sends the name it looked up, so
the server refuses any request whose name it does not know. Always known: IP addresses (a page
cannot rebind an address), ``localhost`` and its subdomains (browsers resolve them to loopback
themselves), the configured ``host`` when it is a name, and ``testserver`` (the name Starlette's
test client uses, which no DNS resolves). Other names are added with ``CNNVIZ_ALLOWED_HOSTS``
(comma-separated; ``*`` turns the check off, e.g. behind a proxy that checks names itself).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from app.serialize import dumps

ALWAYS_ALLOWED = {"localhost", "testserver"}
WILDCARD_ADDRESSES = {"0.0.0.0", "::", ""}


def _name_of(host: str) -> str:
    """The name part of a Host value: no port, no brackets, lower case, no trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostCheckMiddleware:
    def __init__(self, app: ASGIApp, *, configured_host: str, allowed: Iterable[str]) -> None:
        self.app = app
        names = {_name_of(name) for name in allowed}
        self.allow_all = "*" in names
        self.names = ALWAYS_ALLOWED | (names - {"*"})
        configured = _name_of(configured_host)
        if configured not in WILDCARD_ADDRESSES:
            self.names.add(configured)

    def allows(self, host: str | None) -> bool:
        if host is None or self.allow_all:
            return True
        name = _name_of(host)
        return (name in self.names or name.endswith(".localhost") or _is_address(name))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = next((value.decode("latin-1") for key, value in scope.get("headers", ())
                     if key == b"host"), None)
        if self.allows(host):
            await self.app(scope, receive, send)
            return
        shown = _name_of(host or "")[:100]
        body = dumps({"detail": f"this server does not answer to the name {shown!r}; open it "
                                "by its address (such as 127.0.0.1) or by a name its "
                                "administrator has allowed"})
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
