"""The teaching loop: trace a sample, take a training step, train a while, evaluate.

Each route hands its work to ``computation`` (app/limits.py): once the request has its session's
turn and a computation slot, the CPU-bound engine runs on a worker thread, holding the session's
lock for the whole computation, so two requests never interleave an update of one session.
The answer is rendered after the lock is released (its arrays are copies)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from app import training
from app.deps import (
    ANSWER_QUERY_OPENAPI,
    answer_view,
    locked_session,
    store_and_settings,
)
from app.limits import check_work, computation
from app.routes.quick_body import QuickBodyRoute
from app.schemas import (
    ErrorOut,
    EvaluateRequest,
    EvaluationOut,
    GradcheckOut,
    GradcheckRequest,
    StepOut,
    StepRequest,
    TraceOut,
    TrainOut,
    TrainRequest,
    TraceRequest,
)
from app.security import SessionIdPath
from app.serialize import SAFETENSORS_MEDIA_TYPE, FastJSONResponse
from app.sessions import Session
from app.storage_errors import is_disk_full
from app.store import SessionStore

# QuickBodyRoute: a valid JSON body is read in one step (the page's trace and step requests)
router = APIRouter(prefix="/api/sessions/{session_id:session_id}", tags=["training"],
                   route_class=QuickBodyRoute)
logger = logging.getLogger("cnnviz")

ERRORS = {404: {"model": ErrorOut}, 422: {"model": ErrorOut}}
# Trace and step answer JSON by default, a safetensors file with ?format=safetensors.
BINARY_ANSWER = {200: {"content": {SAFETENSORS_MEDIA_TYPE: {
    "schema": {"type": "string", "format": "binary"}}},
    "description": "the answer as JSON, or with format=safetensors as a safetensors file"}}


@router.post("/trace", response_model=TraceOut, responses={**ERRORS, **BINARY_ANSWER},
             openapi_extra=ANSWER_QUERY_OPENAPI,
             summary="Forward and backward pass of one sample; nothing is updated")
async def trace(request: Request, session_id: SessionIdPath, body: TraceRequest) -> Response:
    view = answer_view(request)
    store, settings = store_and_settings(request)

    def work() -> Response:
        with locked_session(store, session_id, save=False) as session:
            check_work(session.spec, settings, batch=1, traced=1)
            sample = training.resolve_sample(session, body.input, body.label)
            answer, remembered = training.trace_sample(session, sample, body.edit_list(),
                                                       view.fields)
            if remembered:
                _record_traced_input(store, session)
        return view.response(answer)

    return await computation(request, work, quick=True)


def _record_traced_input(store: SessionStore, session: Session) -> None:
    """Record the session's new last input (the PyTorch export's input) for every server
    process; the session itself is not rewritten (a trace changes nothing else). On a full disk
    the trace still answers: it needs no room itself, and the input stays remembered here."""
    try:
        store.remember_input(session)
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        logger.warning("disk full: session %s's last traced input was not saved", session.id)


@router.post("/gradcheck", response_model=GradcheckOut, responses=ERRORS,
             summary="Analytic gradient of one weight, bias or input value beside a central "
                     "difference; nothing is updated")
async def gradcheck(request: Request, session_id: SessionIdPath, body: GradcheckRequest
                    ) -> FastJSONResponse:
    store, settings = store_and_settings(request)

    def work() -> FastJSONResponse:
        with locked_session(store, session_id, save=False) as session:
            # a trace for the analytic value, and two forward passes for the central difference
            check_work(session.spec, settings, batch=1, traced=1, forward_only=2)
            sample = training.resolve_sample(session, body.input, body.label)
            answer = training.gradcheck(session, sample, body.target(), body.epsilon,
                                        body.edit_list())
        return FastJSONResponse(answer)

    return await computation(request, work)


@router.post("/step", response_model=StepOut, responses={**ERRORS, **BINARY_ANSWER},
             openapi_extra=ANSWER_QUERY_OPENAPI,
             summary="One training iteration on a mini-batch, with the trace of its first sample")
async def step(request: Request, session_id: SessionIdPath, body: StepRequest) -> Response:
    view = answer_view(request)
    store, settings = store_and_settings(request)

    def work() -> Response:
        with locked_session(store, session_id, save=True) as session:
            # a trace of the first sample, a traced batch, and the batch forward again after the
            # update (the first sample's trace is held beside the batch's: batch_size + 1 in
            # memory)
            check_work(session.spec, settings, batch=body.batch_size + 1,
                       traced=body.batch_size + 1, forward_only=body.batch_size)
            first = None
            if body.input is not None:
                first = training.resolve_sample(session, body.input, body.label)
            answer = training.step(session, body, first, settings.max_history, view.fields)
        return view.response(answer)

    return await computation(request, work)


@router.get("/steps/{step}", response_model=StepOut, openapi_extra=ANSWER_QUERY_OPENAPI,
            responses={**ERRORS, **BINARY_ANSWER, 409: {
                "model": ErrorOut, "description": "the step's arrays are no longer kept here"}},
            summary="The latest step's answer again, with the fields asked; nothing is updated",
            description="The server process that took a step keeps its arrays in memory until "
                        "the next step or training, so a client may ask the step for a few "
                        "fields and fetch the rest (weights, gradients) afterwards. 409 when "
                        "they are gone: a newer step, or another or restarted server process.")
async def kept_step(request: Request, session_id: SessionIdPath,
                    step: Annotated[int, Path(ge=1, description="the step's number, as its "
                                                                "answer gave it")]
                    ) -> Response:
    view = answer_view(request)
    store, _ = store_and_settings(request)

    def work() -> Response:
        with locked_session(store, session_id, save=False) as session:
            answer = training.kept_step(session, step, view.fields)
        return view.response(answer)

    return await computation(request, work)


@router.post("/train", response_model=TrainOut, responses=ERRORS,
             summary="Run several training steps at once (all or nothing)")
async def train(request: Request, session_id: SessionIdPath, body: TrainRequest
                ) -> FastJSONResponse:
    store, settings = store_and_settings(request)

    def work() -> FastJSONResponse:
        with locked_session(store, session_id, save=True) as session:
            check_work(session.spec, settings, batch=body.batch_size,
                       traced=body.steps * body.batch_size)
            answer = training.train(session, body, body.steps, settings.max_history)
        return FastJSONResponse(answer)

    return await computation(request, work)


@router.post("/evaluate", response_model=EvaluationOut, responses=ERRORS,
             summary="Held-out accuracy and loss on the MNIST test split")
async def evaluate(request: Request, session_id: SessionIdPath,
                   body: EvaluateRequest | None = None) -> FastJSONResponse:
    store, settings = store_and_settings(request)
    limit = body.limit if body is not None else settings.max_eval_samples
    exclude = body.exclude if body is not None else []

    def work() -> FastJSONResponse:
        with locked_session(store, session_id, save=True) as session:
            check_work(session.spec, settings, batch=min(limit, training.EVALUATION_CHUNK),
                       traced=limit)
            answer = training.evaluate(session, limit, settings.max_history, exclude)
        return FastJSONResponse(answer)

    return await computation(request, work)
