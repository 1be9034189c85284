"""The real server (uvicorn in a subprocess on a free loopback port) and Debian's headless
Chromium driven by Playwright, shared by the page tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT / "bench"))
from serving import Server  # noqa: E402  (the launcher the benchmarks use too)

SCREENSHOTS = PROJECT_ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    # Every page these tests open builds a session and leaves it (as a closed tab does): the
    # suite opens more than the default cap of 64, all within the 10 minutes that protect a
    # session from eviction. The cap itself is tested in tests/hardening.
    with Server(tmp_path_factory.mktemp("cnnviz-browser-data"), {"CNNVIZ_MAX_SESSIONS": "1000"}) as running:
        yield running.url


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (scripts/test.sh installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class PageProblems:
    """Console errors and uncaught exceptions seen by a page."""

    def __init__(self, page):
        self.messages: list[str] = []
        page.on("console", lambda message: self.messages.append(f"console: {message.text}")
                if message.type == "error" else None)
        page.on("pageerror", lambda error: self.messages.append(f"page error: {error}"))


@pytest.fixture
def open_page(browser, server):
    """open_page(width=1280, height=800) -> (page, problems), the app loaded and ready."""
    contexts = []

    def opener(width: int = 1280, height: int = 800):
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        problems = PageProblems(page)
        page.goto(server + "/")
        page.wait_for_function("() => window.cnnviz && window.cnnviz.ready")
        return page, problems

    try:
        yield opener
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def screenshot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
