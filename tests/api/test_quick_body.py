"""QuickBodyRoute (app/routes/quick_body.py): a valid JSON body is read in one step, and every
other request is answered by FastAPI's own handler, exactly as a plain route answers it."""

from __future__ import annotations

from typing import Annotated

import fastapi.routing
import pytest
from fastapi import APIRouter, FastAPI, Path, Query, Request, Response
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field

from app.main import create_app
from app.routes.quick_body import QuickBodyRoute
from app.settings import Settings


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    items: list[float] = Field(min_length=1, max_length=3)
    rate: float = Field(0.5, gt=0)
    note: str | None = None


async def endpoint(request: Request, key: Annotated[str, Path(pattern="^[a-z]{3}$")],
                   body: Order) -> Response:
    # echoes what the endpoint was given, so both routes' answers can be compared
    answer = body.model_dump_json().encode() + f" key={key} {request.method}".encode()
    return Response(answer, media_type="text/plain")


async def with_query(key: str, body: Order, limit: int = Query(3)) -> Response:
    return Response(f"{key} {limit} {body.items}".encode(), media_type="text/plain")


def _app() -> FastAPI:
    app = FastAPI()
    for prefix, route_class in (("/quick", QuickBodyRoute), ("/plain", fastapi.routing.APIRoute)):
        router = APIRouter(prefix=prefix, route_class=route_class)
        router.add_api_route("/orders/{key}", endpoint, methods=["POST"])
        router.add_api_route("/query/{key}", with_query, methods=["POST"])
        app.include_router(router)
    return app


@pytest.fixture
def client():
    with TestClient(_app()) as client:
        yield client


@pytest.fixture
def parameters_solved(monkeypatch):
    """How often FastAPI's own handler solved a request's parameters."""
    calls = []
    real = fastapi.routing.solve_dependencies

    async def counting(*args, **kwargs):
        calls.append(1)
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return calls


REQUESTS = [
    # (path key, body bytes, content type)
    ("abc", b'{"items": [1, 2.5], "rate": 2, "note": "hi"}', "application/json"),
    ("abc", b'{"items": [1]}', "application/json; charset=utf-8"),
    ("abc", b'{"items": [1]}', "APPLICATION/JSON"),
    ("abc", b'{"items": []}', "application/json"),  # too short
    ("abc", b'{"items": [1], "rate": -1}', "application/json"),  # out of range
    ("abc", b'{"items": [1], "extra": 1}', "application/json"),  # an unknown field
    ("abc", b'{"items": ["1"]}', "application/json"),  # strict: a string is not a float
    ("abc", b'{"items": [NaN]}', "application/json"),  # not JSON
    ("abc", b'{"items": [1]', "application/json"),  # cut short
    ("abc", b"", "application/json"),
    ("abc", b"[]", "application/json"),
    ("abc", b'{"items": [1]}', "text/plain"),
    ("abc", b'{"items": [1]}', "application/merge-patch+json"),
    ("abc", b'{"items": [1]}', None),
    ("ABC", b'{"items": [1]}', "application/json"),  # the path parameter's pattern
    ("abcd", b'{"items": [1]}', "application/json"),
]


@pytest.mark.parametrize("key, body, content_type", REQUESTS)
def test_every_request_is_answered_as_a_plain_route_answers_it(client, key, body, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    quick = client.post(f"/quick/orders/{key}", content=body, headers=headers)
    plain = client.post(f"/plain/orders/{key}", content=body, headers=headers)
    assert (quick.status_code, quick.content) == (plain.status_code, plain.content)


def test_a_valid_json_body_skips_fastapis_parameter_solving(client, parameters_solved):
    answer = client.post("/quick/orders/abc", json={"items": [1, 2]})
    assert answer.status_code == 200
    assert answer.text == '{"items":[1.0,2.0],"rate":0.5,"note":null} key=abc POST'
    assert parameters_solved == []
    # anything else is FastAPI's: a body that does not validate, a route with a query parameter
    assert client.post("/quick/orders/abc", json={"items": []}).status_code == 422
    assert client.post("/quick/query/abc?limit=5", json={"items": [1]}).text == "abc 5 [1.0]"
    assert len(parameters_solved) == 2


def test_the_trace_and_step_routes_take_the_quick_path(parameters_solved):
    with TestClient(create_app(Settings())) as client:
        session_id = client.post("/api/sessions", json={"preset": "tiny", "seed": 1}).json()["id"]
        solved_before = len(parameters_solved)
        trace = client.post(f"/api/sessions/{session_id}/trace",
                            json={"input": {"dataset": "mnist", "index": 3}})
        step = client.post(f"/api/sessions/{session_id}/step", json={"batch_size": 4})
        assert (trace.status_code, step.status_code) == (200, 200)
        assert trace.json()["source"]["index"] == 3 and step.json()["step"] == 1
        assert len(parameters_solved) == solved_before
