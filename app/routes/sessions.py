"""Session lifecycle: create (preset or spec), read, delete, history, export and import."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, HTTPException, Response, UploadFile

from engine import SpecError

from app.deps import SettingsDep, StoreDep, locked_session
from app.limits import check_spec
from app.presets import PRESETS
from app.schemas import CreateSessionRequest, ErrorOut, HistoryOut, SessionOut
from app.security import SessionIdPath
from app.serialize import FastJSONResponse
from app.import_validation import decode_import
from app.session_codec import encode_session
from app.sessions import Session, new_session_id
from app.settings import Settings
from app.pytorch_export import export_zip
from app.training import export_input, target_rule

router = APIRouter(prefix="/api/sessions", tags=["sessions"])

DEFAULT_POSITIVE_CLASS = 0
UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9_-]")
NOT_FOUND = {404: {"model": ErrorOut, "description": "unknown, deleted or expired session"}}


def session_json(session: Session) -> dict[str, Any]:
    return {**session.summary(), "target_rule": target_rule(session).describe()}


def _new_session(request: CreateSessionRequest, settings: Settings) -> Session:
    if request.preset is not None:
        preset = PRESETS.get(request.preset)
        if preset is None:
            raise HTTPException(404, f"unknown preset {request.preset!r}; choose one of "
                                     f"{', '.join(PRESETS)}")
        spec = preset.spec_with_seed(request.seed if request.seed is not None else 0)
        positive_class = request.positive_class
        if positive_class is None:
            positive_class = preset.positive_class
    else:
        spec = dict(request.spec)
        if request.seed is not None:
            spec["seed"] = request.seed
        positive_class = request.positive_class
    try:
        check_spec(spec, settings)
        session = Session.create(spec, preset=request.preset, positive_class=positive_class)
        if request.preset is not None:
            preset.initialize(session.network)
    except SpecError as exc:
        raise HTTPException(422, f"invalid spec: {exc}") from exc
    outputs = session.network.output_size
    if outputs == 1 and session.positive_class is None:
        session.positive_class = DEFAULT_POSITIVE_CLASS
    elif outputs != 1 and session.positive_class is not None:
        raise HTTPException(422, "positive_class applies only to a network with a single output "
                                 f"unit; this one has {outputs}")
    return session


@router.post("", status_code=201, response_model=SessionOut,
             responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut},
                        429: {"model": ErrorOut}},
             summary="Create a session from a preset or a spec")
def create_session(body: CreateSessionRequest, store: StoreDep,
                   settings: SettingsDep) -> FastJSONResponse:
    session = _new_session(body, settings)
    store.add(session)
    return FastJSONResponse(session_json(session), status_code=201)


@router.post("/import", status_code=201, response_model=SessionOut,
             responses={422: {"model": ErrorOut}, 429: {"model": ErrorOut}},
             summary="Create a session from an exported session file (gets a new id)")
def import_session(file: Annotated[UploadFile, File()], store: StoreDep,
                   settings: SettingsDep) -> FastJSONResponse:
    data = file.file.read(settings.max_session_file_bytes + 1)
    try:
        session = decode_import(data, settings, new_id=new_session_id())
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    store.add(session)
    return FastJSONResponse(session_json(session), status_code=201)


@router.get("/{session_id:session_id}", response_model=SessionOut, responses=NOT_FOUND)
def get_session(session_id: SessionIdPath, store: StoreDep) -> FastJSONResponse:
    with locked_session(store, session_id, save=False) as session:
        return FastJSONResponse(session_json(session))


@router.delete("/{session_id:session_id}", status_code=204, responses=NOT_FOUND)
def delete_session(session_id: SessionIdPath, store: StoreDep) -> Response:
    store.delete(session_id)
    return Response(status_code=204)


@router.get("/{session_id:session_id}/history", response_model=HistoryOut, responses=NOT_FOUND,
            summary="Loss and accuracy per step (after step 'since'), and held-out evaluations")
def history(session_id: SessionIdPath, store: StoreDep, since: int = -1) -> FastJSONResponse:
    with locked_session(store, session_id, save=False) as session:
        return FastJSONResponse({"step": session.step, **session.history.since(since)})


@router.get("/{session_id:session_id}/export", responses={**NOT_FOUND, 200: {
    "content": {"application/octet-stream": {}, "application/zip": {}},
    "description": "format=session (default): the session as an .npz file (see "
                   "app/session_codec.py); format=pytorch: a zip with model.py, "
                   "weights.safetensors, input.safetensors and README.md"}},
    response_class=Response, summary="Download the session (weights, optimizer state, step, "
                                     "spec, history), or the network as a PyTorch project")
def export_session(session_id: SessionIdPath, store: StoreDep,
                   format: Literal["session", "pytorch"] = "session") -> Response:
    with locked_session(store, session_id, save=False) as session:
        store.refresh_last_input(session)  # a trace in another server process records only that
        # An imported file can carry any preset text; only safe characters reach the header.
        label = UNSAFE_IN_FILE_NAME.sub("", session.preset or "") or "custom"
        stem = f"cnnviz-{label}-step{session.step}"
        if format == "pytorch":
            traced, was_traced = export_input(session)
            data = export_zip(session, traced, was_traced)
            name, media_type = f"{stem}-pytorch.zip", "application/zip"
        else:
            data = encode_session(session)
            name, media_type = f"{stem}.npz", "application/octet-stream"
    return Response(data, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
