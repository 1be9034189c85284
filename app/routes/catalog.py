"""Read-only catalogue: health, presets, the shipped MNIST sample, and image upload."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, HTTPException, Path, Query, UploadFile

from app.images import ImageError, preprocess_image
from app.datasets import split_arrays, split_size
from app.deps import SettingsDep
from app.presets import PRESETS
from app.schemas import ErrorOut, Health, MnistPage, MnistSample, PixelsOut, PresetOut, Split
from app.serialize import FastJSONResponse
from app.settings import get_settings

router = APIRouter(prefix="/api", tags=["catalogue"])
# Far past any split's end, and small enough to come back in the answer as a JSON integer.
MAX_OFFSET = 2**31 - 1


@router.get("/health", response_model=Health)
async def health() -> FastJSONResponse:
    return FastJSONResponse({"status": "ok"})


@router.get("/presets", response_model=list[PresetOut])
async def presets() -> FastJSONResponse:
    return FastJSONResponse([preset.as_json() for preset in PRESETS.values()])


@router.get("/mnist", response_model=MnistPage,
            summary="List MNIST samples of a split (index and label, optionally pixels)")
def mnist_page(
    settings: SettingsDep,
    split: Split = "train",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=get_settings().max_mnist_page,
                                       description="default and maximum: the page cap")] = None,
    pixels: bool = False,
) -> FastJSONResponse:
    if limit is not None and limit > settings.max_mnist_page:
        raise HTTPException(422, f"limit must be at most {settings.max_mnist_page}, got {limit}")
    images, labels = split_arrays(split)
    stop = min(offset + (limit or settings.max_mnist_page), len(labels))
    items = [{"index": i, "label": int(labels[i])} for i in range(offset, stop)]
    if pixels:
        for item in items:
            item["pixels"] = images[item["index"], 0]
    return FastJSONResponse({"split": split, "total": len(labels), "offset": offset,
                             "items": items})


@router.get("/mnist/{index}", response_model=MnistSample,
            responses={404: {"model": ErrorOut}},
            summary="One MNIST sample's 28x28 pixels and label")
def mnist_sample(index: Annotated[int, Path(ge=0)], split: Split = "train") -> FastJSONResponse:
    size = split_size(split)
    if index >= size:
        raise HTTPException(404, f"no sample {index} in the MNIST {split} split "
                                 f"(it has {size}: 0..{size - 1})")
    images, labels = split_arrays(split)
    return FastJSONResponse({"index": index, "label": int(labels[index]), "split": split,
                             "pixels": images[index, 0]})


@router.post("/images", response_model=PixelsOut,
             responses={413: {"model": ErrorOut}, 415: {"model": ErrorOut},
                        422: {"model": ErrorOut}},
             summary="Turn an uploaded PNG/JPEG/GIF/BMP/WebP into MNIST-style 28x28 pixels")
def upload_image(settings: SettingsDep, file: Annotated[UploadFile, File()]) -> FastJSONResponse:
    data = file.file.read()
    try:
        pixels = preprocess_image(data, max_pixels=settings.max_image_pixels)
    except ImageError as exc:
        raise HTTPException(exc.status_code, str(exc)) from exc
    return FastJSONResponse({"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})

