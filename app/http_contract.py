"""What every answer of the API promises, in one place: the OpenAPI document lists every error an
operation can give, and a 405 names every method the path accepts.

Some errors do not come from a route but from layers every request goes through, so FastAPI
cannot know about them when it documents the routes: the body-size limit (413), a body that is
not parseable at all (400), the validation handler's own ``{"detail": [...]}`` shape (422), the
session lookup (404 on every path with a session id), and the computation slots of the training
routes (429, see ``app.limits``). ``document_errors`` adds them to the
generated document so that a client (or a schema-driven fuzzer) can rely on it.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount

from app.schemas import ErrorOut
from app.serialize import FastJSONResponse
from app.store import SessionNotFound

ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


BODY_ERRORS = {
    "400": _error("the body cannot be parsed at all (malformed JSON or multipart)"),
    "413": _error("the body is larger than the server accepts (it has one limit for file "
                  "uploads and a smaller one for JSON; 'detail' names the limit)"),
}
VALIDATION_ERROR = _error("the request is not valid; 'detail' says what was wrong: a list of "
                          "{loc, msg, type} for what this document's schemas refuse, a sentence "
                          "for the rules they cannot express (a spec that is no network for its "
                          "input, an upload that is not a picture or a session file, a sample "
                          "or label the network cannot use, a request over the server's work or "
                          "memory caps, steps x batch_size over the samples one request may "
                          "train on)")
SESSION_ERROR = _error("unknown, deleted or expired session")
BUSY_ERROR = _error("every computation slot of the server stayed taken too long; try again "
                    "shortly")
SESSION_PATH = re.compile(r"/api/sessions/([^/]+)(?:/[a-z]+(?:/[0-9]+)?)?")
CONFLICT_ERROR = _error("another server process saved the session while this request ran; "
                        "nothing was saved")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def document_errors(app: FastAPI) -> None:
    """Make ``app.openapi()`` list the errors that come from middleware and handlers."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
            "ErrorOut", ErrorOut.model_json_schema())
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                # Every error body is {"detail": ...}; FastAPI's default 422 entry claims a
                # list, but a route's own 422 (a bad spec, an index out of range) says it in words.
                if operation.get("parameters") or "requestBody" in operation:
                    responses["422"] = VALIDATION_ERROR
                if "requestBody" in operation:
                    for status, entry in BODY_ERRORS.items():
                        responses.setdefault(status, entry)
                if "{session_id}" in path:
                    responses.setdefault("404", SESSION_ERROR)
                if "training" in operation.get("tags", ()):
                    responses.setdefault("429", BUSY_ERROR)
                    responses.setdefault("409", CONFLICT_ERROR)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(404, _not_found)
    app.add_exception_handler(405, _method_not_allowed)


async def _not_found(request: Request, exc: HTTPException) -> FastJSONResponse:
    """A session path whose id does not fit the id pattern matches no route (see
    ``app.security.SessionIdConvertor``); say so in the words of an unknown session rather
    than the router's bare "Not Found". Every other 404 keeps its own detail."""
    detail = exc.detail
    malformed = SESSION_PATH.fullmatch(request.url.path)
    if detail == "Not Found" and malformed:
        detail = str(SessionNotFound(malformed.group(1)))
    return FastJSONResponse({"detail": detail}, status_code=404, headers=exc.headers)


async def _method_not_allowed(request: Request, exc: HTTPException) -> FastJSONResponse:
    """Starlette answers 405 from the first route whose path matches, so ``Allow`` would list
    only that route's methods (GET on /api/sessions/{id}, not DELETE); list them all. Mounted
    apps (the static files) match any method, so their own Allow header is kept."""
    allowed = [
        method for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
               for route in request.app.routes if not isinstance(route, Mount))
    ]
    headers = {"Allow": ", ".join(allowed)} if allowed else dict(exc.headers or {})
    return FastJSONResponse({"detail": f"method {request.method} is not allowed here"},
                            status_code=405, headers=headers)
