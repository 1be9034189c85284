"""The ASGI application, ``app.main:app``.

Every error answers JSON ``{"detail": ...}`` with a 4xx: validation problems 422, unknown
sessions/presets 404, full store 429, oversized bodies 413, a full disk 507. A last-resort
middleware (app/unexpected_errors.py) turns any unexpected exception into a logged JSON 500 with
the security headers, keeping the connection open; requests under an unknown host name are
refused (app/host_check.py).

OpenAPI docs are at /docs. FastAPI's Swagger UI loads its script and CSS from a CDN; that is
accepted for /docs only (a developer tool). The page at / needs no network.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from app.host_check import HostCheckMiddleware
from app.http_contract import document_errors
from app.limits import CapExceeded
from app.middleware import BodySizeLimitMiddleware
from app.persistence import build_store
from app.routes import catalog, pages, sessions, specs, training
from app.security import install_security
from app.serialize import FastJSONResponse
from app.settings import Settings, get_settings
from app.static_files import PageFiles
from app.storage_errors import install_storage_errors
from app.store import SessionNotFound, StoreFull
from app.training import Refused
from app.unexpected_errors import UnexpectedErrorMiddleware

logger = logging.getLogger("cnnviz")


# A body can be wrong in thousands of places at once; the first few say what to fix.
MAX_REPORTED_ERRORS = 20


def _validation_errors(exc: RequestValidationError) -> list[dict]:
    """Location, message and type of each problem (the first ``MAX_REPORTED_ERRORS``). The
    offending input is left out: it can be large (a whole pixel array) or not representable in
    JSON (NaN)."""
    errors = exc.errors()
    reported = [{"loc": list(error.get("loc", ())), "msg": error.get("msg", ""),
                 "type": error.get("type", "")} for error in errors[:MAX_REPORTED_ERRORS]]
    if len(errors) > MAX_REPORTED_ERRORS:
        reported.append({"loc": [], "type": "too_many_errors",
                         "msg": f"and {len(errors) - MAX_REPORTED_ERRORS:,} more problems"})
    return reported


async def _on_validation_error(request: Request, exc: RequestValidationError) -> FastJSONResponse:
    return FastJSONResponse({"detail": _validation_errors(exc)}, status_code=422)


async def _on_session_not_found(request: Request, exc: SessionNotFound) -> FastJSONResponse:
    return FastJSONResponse({"detail": str(exc)}, status_code=404)


async def _on_store_full(request: Request, exc: StoreFull) -> FastJSONResponse:
    return FastJSONResponse({"detail": str(exc), "cap": exc.cap, "limit": exc.limit},
                            status_code=429, headers={"Retry-After": "60"})


async def _on_refused(request: Request, exc: Refused) -> FastJSONResponse:
    body = {"detail": exc.detail}
    if isinstance(exc, CapExceeded):
        body.update(cap=exc.cap, limit=exc.limit)
    return FastJSONResponse(body, status_code=exc.status_code)


async def _on_memory_error(request: Request, exc: MemoryError) -> FastJSONResponse:
    """The caps count what a request allocates, so this means the machine itself is short of
    memory (other programs, other requests); the engine's scratch was released on the way out
    (app.deps.locked_session) and the session left as it was."""
    logger.error("out of memory on %s %s", request.method, request.url.path)
    return FastJSONResponse({"detail": "the server does not have enough free memory for this "
                                       "request right now; try again later, or with a smaller "
                                       "batch or network"},
                            status_code=503, headers={"Retry-After": "30"})


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Sync routes run on anyio's worker threads (40 by default). The engine keeps scratch memory
    # per thread, so the thread count bounds the server's memory: keep it to the setting.
    to_thread.current_default_thread_limiter().total_tokens = app.state.settings.worker_threads
    yield
    app.state.store.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="CNN backprop visualizer",
        version="0.1.0",
        description="A NumPy CNN engine's every intermediate (z, a, delta, gradients, pool "
                    "winners, dL/dx) as JSON, plus training sessions on the shipped MNIST sample.",
        default_response_class=FastJSONResponse,
        lifespan=_lifespan,
        # No OpenTelemetry here: otherwise FastAPI asks the OpenTelemetry providers on every
        # request whether one has been configured since (~0.04 ms of a 1.5 ms LeNet-5 trace).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.store = build_store(settings)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes,
                       max_json_body_bytes=settings.max_json_body_bytes)
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(HostCheckMiddleware, configured_host=settings.host,
                       allowed=settings.allowed_hosts)
    install_security(app, cors_origins=settings.cors_origins)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(SessionNotFound, _on_session_not_found)
    app.add_exception_handler(StoreFull, _on_store_full)
    app.add_exception_handler(Refused, _on_refused)
    app.add_exception_handler(MemoryError, _on_memory_error)
    install_storage_errors(app)
    document_errors(app)
    # Routes are matched in this order, router by router: the training routes (trace, step: the
    # page's most frequent requests) first, which saved a trace request ~0.05 ms of matching.
    for module in (training, catalog, sessions, specs, pages):
        app.include_router(module.router)
    app.mount("/static", PageFiles(directory=settings.static_dir, check_dir=False),
              name="static")
    return app


app = create_app()
