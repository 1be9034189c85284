"""Checking a network spec without building a session: what the page's layer builder shows
(each layer's output shape and parameter count, as the engine computes them) and where a
spec goes wrong (the engine's SpecError and the index of the layer it names)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from engine import SpecError, layer_names, normalize_spec, parameter_count

from app.deps import SettingsDep
from app.limits import check_spec
from app.schemas import ErrorOut, SpecCheckOut, SpecCheckRequest, SpecErrorOut
from app.serialize import FastJSONResponse

router = APIRouter(prefix="/api/specs", tags=["specs"])


def spec_error_json(error: SpecError) -> dict[str, Any]:
    return {"detail": f"invalid spec: {error}", "layer": error.layer}


@router.post("/check", response_model=SpecCheckOut,
             responses={422: {"model": SpecErrorOut | ErrorOut,
                              "description": "the spec is invalid (the layer it names, if one) "
                                             "or over a size cap"}},
             summary="Validate a spec: the normalized spec with each layer's shapes and "
                     "parameter count; nothing is built")
def check(body: SpecCheckRequest, settings: SettingsDep) -> FastJSONResponse:
    try:
        normalized, shapes = normalize_spec(body.spec)
    except SpecError as error:
        return FastJSONResponse(spec_error_json(error), status_code=422)
    check_spec(normalized, settings)
    layers = [{"index": index, "name": name, "type": layer["type"],
               "input_shape": list(in_shape), "output_shape": list(out_shape),
               "parameters": parameter_count(layer, in_shape)}
              for index, (name, layer, (in_shape, out_shape))
              in enumerate(zip(layer_names(normalized["layers"]), normalized["layers"], shapes))]
    return FastJSONResponse({"spec": normalized, "layers": layers,
                             "parameters": sum(layer["parameters"] for layer in layers),
                             "output_size": shapes[-1][1][0]})
