"""The page (static/, written by the front end) and Plotly's bundle from the installed package,
so the page works without any network."""

from __future__ import annotations

import logging
from importlib import resources

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)
logger = logging.getLogger("cnnviz")

PLOTLY_BUNDLE = resources.files("plotly") / "package_data" / "plotly.min.js"
# The bundle only changes when the plotly package does, so browsers may keep it.
LONG_CACHE = "public, max-age=31536000, immutable"


@router.get("/")
def index(request: Request) -> FileResponse:
    page = request.app.state.settings.static_dir / "index.html"
    if not page.is_file():
        # where it was looked for is for the log; the visitor learns nothing about the disk
        logger.error("the page is missing: %s does not exist", page)
        raise HTTPException(404, "the page (index.html) is not installed on this server")
    return FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/vendor/plotly.min.js")
def plotly_bundle() -> FileResponse:
    return FileResponse(str(PLOTLY_BUNDLE), media_type="text/javascript",
                        headers={"Cache-Control": LONG_CACHE})
