"""How the browser tests drive the page: its controls, a Step, a click on a cell, a pen stroke, and
reading the inspector's result. One copy for every test file (they had drifted apart: one named
the fastest speed "instant" after the page had renamed it "live")."""

from __future__ import annotations

import json
import math

from playwright.sync_api import TimeoutError as PlaywrightTimeout

CELL_POINT_JS = """([layer, x, y]) => window.cnnviz.app.strip.cellPoint(layer, x, y)"""
SPEED_INDEX_JS = """label => import('/static/js/config.js')
  .then(config => config.SPEEDS.findIndex(speed => speed.label === label))"""


def idle(page) -> None:
    """Waits until the page runs no action (a Step, Play, a rebuild): its queue of actions has
    run out and nothing plays."""
    page.evaluate("() => window.cnnviz.app.idle()")
    page.wait_for_function("() => !window.cnnviz.app.actionRunning && !window.cnnviz.app.playing")


def set_speed(page, label: str) -> None:
    """Moves the speed slider to the page's speed of that name ("live", "fast", "normal", ...)."""
    index = page.evaluate(SPEED_INDEX_JS, label)
    assert index >= 0, f"the page has no speed named {label!r}"
    page.eval_on_selector("#speed", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }",
                          str(index))


def set_view(page, view: str) -> None:
    """Switches what the strip shows and waits until every card has been redrawn."""
    before = page.evaluate("window.cnnviz.renders")
    page.locator(f'#view-options label:has(input[value="{view}"])').click()
    page.wait_for_function("n => window.cnnviz.renders > n", arg=before)
    page.wait_for_function("v => [...document.querySelectorAll('.layer-card')].every(c => c.dataset.view === v || c.dataset.layer === '-1')", arg=view)


def step_and_wait(page, *, then_idle: bool = False) -> None:
    """Presses Step and waits until the timeline has reached its last phase (and, with
    ``then_idle``, until the page runs nothing more)."""
    before = page.evaluate("window.cnnviz.stepTimings.length")
    page.get_by_role("button", name="Step", exact=True).click()
    page.wait_for_function("n => window.cnnviz.stepTimings.length > n", arg=before)
    page.wait_for_function("() => { const t = document.getElementById('timeline'); return t.value === t.max; }")
    if then_idle:
        idle(page)


def choose_preset(page, name: str) -> None:
    """Picks a preset and waits until its session is built and traced."""
    page.select_option("#preset", name)
    page.wait_for_function("n => window.cnnviz.app.session && window.cnnviz.app.session.preset === n"
                           " && window.cnnviz.app.record", arg=name)
    idle(page)


def apply_spec(page, spec: dict | str) -> None:
    """Applies a JSON spec from the editor (a dict, or its text as typed)."""
    page.locator("#spec-details > summary").click()
    page.fill("#spec-editor", spec if isinstance(spec, str) else json.dumps(spec, indent=1))
    page.get_by_role("button", name="Apply JSON").click()
    page.wait_for_function("() => window.cnnviz.app.session && !window.cnnviz.app.session.preset")
    idle(page)


def draw_a_stroke(page) -> None:
    """One vertical pen stroke down the middle of the drawing canvas."""
    canvas = page.locator("#draw-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.2)
    page.mouse.down()
    for k in range(1, 13):
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * (0.2 + 0.05 * k))
    page.mouse.up()


def wait_until_still(page, position_js: str) -> None:
    """Waits until a smooth scroll, read by `position_js`, has stopped."""
    last = None
    for _ in range(40):
        position = page.evaluate(position_js)
        if position == last:
            return
        last = position
        page.wait_for_timeout(80)


def settle_scroll(page) -> None:
    """The page's own scroll (the inspector scrolls itself into view)."""
    wait_until_still(page, "() => window.scrollY")


def pick_in_magnifier(page, x: int, y: int) -> None:
    """A weight matrix with cells under 6 px opens a magnifier on click: pick cell (x, y) in it."""
    zoom = page.locator(".weight-zoom")
    if zoom.count() == 0:
        return
    row0, col0 = int(zoom.get_attribute("data-row0")), int(zoom.get_attribute("data-col0"))
    rows, cols = int(zoom.get_attribute("data-rows")), int(zoom.get_attribute("data-cols"))
    box = zoom.locator("canvas").bounding_box()
    page.mouse.click(box["x"] + (x - col0 + 0.5) * box["width"] / cols, box["y"] + (y - row0 + 0.5) * box["height"] / rows)


def click_cell_once(page, layer: int, x: int, y: int, with_result: bool = True) -> float:
    """Clicks heatmap cell (x, y) of a card; returns the value the heatmap shows there.
    with_result: wait for a sum compared with the engine (a weight's story has none)."""
    page.evaluate("() => { const t = document.querySelector('[data-role=inspector-title]'); if (t) t.textContent = ''; }")
    page.locator(f'.layer-card[data-layer="{layer}"] .layer-plot').scroll_into_view_if_needed()
    settle_scroll(page)
    point = page.evaluate(CELL_POINT_JS, [layer, x, y])
    page.mouse.click(point["x"], point["y"])
    pick_in_magnifier(page, x, y)
    name = page.evaluate("i => document.querySelector(`.layer-card[data-layer=\"${i}\"] .layer-name`).textContent", layer)
    page.wait_for_function("n => document.querySelector('[data-role=inspector-title]').textContent.startsWith(n)", arg=name)
    page.wait_for_selector("#inspector:not([hidden]) [data-role=inspector-result]" if with_result else "#inspector:not([hidden])")
    return point["value"]


def click_cell(page, layer: int, x: int, y: int, with_result: bool = True) -> float:
    """click_cell_once, clicked again when the first click found the strip being redrawn (on a
    loaded machine a click can land while the figure replaces its pictures)."""
    for attempt in range(3):
        page.set_default_timeout(10_000 if attempt < 2 else 30_000)
        try:
            return click_cell_once(page, layer, x, y, with_result)
        except PlaywrightTimeout:
            if attempt == 2:
                raise
        finally:
            page.set_default_timeout(30_000)
    raise AssertionError("unreachable")


SUPERSCRIPT_DIGITS = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")


def read_number(text: str) -> str:
    """A number as the page prints it ("4.952 × 10⁻⁴") in Python's notation ("4.952e-4")."""
    return text.replace(" × 10", "e").translate(SUPERSCRIPT_DIGITS)


def assert_result_matches(page, selector: str = "[data-role=inspector-result]") -> tuple[float, float]:
    """The inspector's sum equals the engine's value, as numbers and as printed."""
    result = page.locator(selector).first
    computed = float(result.get_attribute("data-computed"))
    engine = float(result.get_attribute("data-engine"))
    assert math.isclose(computed, engine, rel_tol=1e-4, abs_tol=1e-6), (computed, engine)
    assert "matches" in result.inner_text()
    shown_computed = read_number(result.locator("strong").nth(0).inner_text())
    shown_engine = read_number(result.locator("strong").nth(1).inner_text())
    assert math.isclose(float(shown_computed), float(shown_engine), rel_tol=1e-4, abs_tol=1e-6)
    return computed, engine
