"""The page (static/, written by the front end) and Plotly's bundle from the installed package,
so the page works without any network."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)

PLOTLY_BUNDLE = resources.files("plotly") / "package_data" / "plotly.min.js"
# The bundle only changes when the plotly package does, so browsers may keep it.
LONG_CACHE = "public, max-age=31536000, immutable"


@router.get("/")
def index(request: Request) -> FileResponse:
    page = request.app.state.settings.static_dir / "index.html"
    if not page.is_file():
        raise HTTPException(404, f"the page is missing: {page} does not exist")
    return FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/vendor/plotly.min.js")
def plotly_bundle() -> FileResponse:
    return FileResponse(str(PLOTLY_BUNDLE), media_type="text/javascript",
                        headers={"Cache-Control": LONG_CACHE})
