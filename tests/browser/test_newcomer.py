"""A newcomer's path through the page without a stumble (issue 10, items 1-15): each test here
failed before its fix, in real headless Chromium against the real server."""

from __future__ import annotations

import json
import re

import pytest
from driving import (
    CELL_POINT_JS,
    apply_spec,
    choose_preset,
    click_cell,
    draw_a_stroke,
    idle,
    set_speed,
    step_and_wait,
)
from PIL import Image, ImageDraw
from pictures import PICTURE_PIXELS_JS, pixel

pytestmark = pytest.mark.browser

FIVE_OUTPUTS = {"input_shape": [1, 28, 28], "layers": [
    {"type": "flatten"},
    {"type": "dense", "units": 16, "activation": "relu"},
    {"type": "dense", "units": 5, "activation": "softmax"}], "loss": "cross_entropy", "seed": 3}


def banner_text(page) -> str:
    return page.inner_text("#error-text") if page.is_visible("#error-banner") else ""


def no_developer_words(text: str) -> None:
    assert "CNNVIZ" not in text, text
    assert not re.search(r"Error [45]\d\d|HTTP|\b[45]\d\d:", text), text
    assert "bytes" not in text, text


# --- 1. long training runs in chunks, with progress, growing curves and Cancel ------------------

def test_long_training_runs_in_chunks_with_progress_and_cancel(open_page, screenshot):
    page, problems = open_page()
    choose_preset(page, "mlp")
    page.fill("#train-steps", "600")  # over the server's 500 steps per request
    page.get_by_role("button", name="Train steps").click()
    progress = page.locator("#train-progress")
    progress.wait_for(state="visible")
    # the curves grow while the run goes on, chunk by chunk
    page.wait_for_function("() => { const p = document.getElementById('train-progress-bar'); return Number(p.value) > 0 && Number(p.value) < Number(p.max); }")
    partial = page.evaluate("window.cnnviz.app.history.steps.length")
    assert 0 < partial < 600
    page.wait_for_function("() => window.cnnviz.app.history.steps.length === 600", timeout=240_000)
    idle(page)
    assert progress.is_hidden()
    assert "Trained 600 steps" in page.inner_text("#eval-result")
    assert page.evaluate("document.getElementById('curves-plot').data[0].x.length") == 600
    assert banner_text(page) == ""
    # Cancel stops a long run after the chunk in flight; what was trained is kept
    page.fill("#train-steps", "2000")
    page.get_by_role("button", name="Train steps").click()
    progress.wait_for(state="visible")
    page.wait_for_function("() => window.cnnviz.app.history.steps.length > 600")
    page.get_by_role("button", name="Cancel").click()
    idle(page)
    trained = page.evaluate("window.cnnviz.app.history.steps.length")
    assert 600 < trained < 2600
    assert "Cancelled" in page.inner_text("#eval-result")
    assert page.evaluate("window.cnnviz.app.session.step") == trained
    no_developer_words(page.inner_text("body"))
    assert problems.messages == []


def test_lenet_training_over_the_work_cap_still_runs(open_page):
    """LeNet-5's 500 steps of 32 are over the server's multiply-add cap per request: the page
    sizes its chunks so that it never meets it (one chunk is run, then the run is cancelled)."""
    page, problems = open_page()
    page.fill("#train-steps", "500")
    page.get_by_role("button", name="Train steps").click()
    page.wait_for_function("() => window.cnnviz.app.history.steps.length > 0", timeout=120_000)
    page.get_by_role("button", name="Cancel").click()
    idle(page)
    assert banner_text(page) == ""
    no_developer_words(page.inner_text("body"))
    assert problems.messages == []


# --- 2. Build after Apply JSON ---------------------------------------------------------------

def test_build_after_applied_json_rebuilds_that_architecture_with_the_new_seed(open_page):
    page, problems = open_page()
    apply_spec(page, FIVE_OUTPUTS)
    assert "seed 3" in page.inner_text("#session-status")
    page.fill("#seed", "7")
    page.get_by_role("button", name="Build", exact=True).click()
    page.wait_for_function("() => document.getElementById('session-status').textContent.includes('seed 7')")
    idle(page)
    assert banner_text(page) == ""
    assert page.evaluate("window.cnnviz.app.session.spec.layers[2].units") == 5
    assert page.evaluate("window.cnnviz.app.session.spec.seed") == 7
    assert problems.messages == []


# --- 3. a refused input restores the input panel ---------------------------------------------

def test_a_refused_input_restores_the_panel_and_the_shown_digit(open_page, tmp_path):
    page, problems = open_page()
    page.locator("#mnist-grid .thumb", has=page.locator("span", has_text=re.compile("^[0-4]$"))).first.click()
    idle(page)
    apply_spec(page, FIVE_OUTPUTS)
    caption = page.inner_text("#input-caption")
    label_before = page.evaluate("window.cnnviz.app.record.trace.label")
    assert label_before < 5
    preview = page.evaluate("document.getElementById('input-preview').toDataURL()")
    pressed = page.evaluate("[...document.querySelectorAll('#mnist-grid .thumb[aria-pressed=true]')].map(b => b.dataset.index)")
    seven = page.locator("#mnist-grid .thumb", has=page.locator("span", has_text=re.compile("^[5-9]$"))).first
    seven.click()
    page.locator("#error-banner").wait_for(state="visible")
    idle(page)
    assert page.inner_text("#input-caption") == caption
    assert page.evaluate("document.getElementById('input-preview').toDataURL()") == preview
    assert page.evaluate("[...document.querySelectorAll('#mnist-grid .thumb[aria-pressed=true]')].map(b => b.dataset.index)") == pressed
    assert page.evaluate("window.cnnviz.app.inputs.current.label") == label_before
    assert page.evaluate("window.cnnviz.app.record.trace.label") == label_before
    page.get_by_role("button", name="Dismiss").click()
    # a failed upload: the file picker is emptied and the panel keeps the input in use
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("these are not pixels")
    page.get_by_role("tab", name="Upload").click()
    page.set_input_files("#upload-file", str(not_an_image))
    page.locator("#error-banner").wait_for(state="visible")
    idle(page)
    assert page.evaluate("document.getElementById('upload-file').files.length") == 0
    assert page.inner_text("#input-caption") == caption
    assert all("422" in m or "415" in m for m in problems.messages), problems.messages


# --- 7. no page error, ever --------------------------------------------------------------------

def test_clicking_a_cell_then_switching_preset_raises_no_page_error(open_page):
    page, problems = open_page()
    set_speed(page, "live")
    step_and_wait(page, then_idle=True)
    click_cell(page, 0, 3, 3, with_result=False)
    choose_preset(page, "tiny")
    click_cell(page, 0, 1, 1, with_result=False)
    choose_preset(page, "lenet5")
    # and while a step is being animated, with the inspector open
    set_speed(page, "slow")
    click_cell(page, 0, 4, 4, with_result=False)
    page.get_by_role("button", name="Step", exact=True).click()
    page.wait_for_function("() => window.cnnviz.app.animating")
    page.select_option("#preset", "deep")
    page.wait_for_function("() => window.cnnviz.app.session.preset === 'deep' && window.cnnviz.app.record")
    idle(page)
    page.wait_for_timeout(500)
    assert problems.messages == []


def test_a_newcomers_path_raises_no_page_or_console_error(open_page):
    page, problems = open_page()
    step_and_wait(page, then_idle=True)
    for view in ("a", "delta", "W", "dW", "auto"):
        page.locator(f'#view-options label:has(input[value="{view}"])').click()
    click_cell(page, 0, 2, 2, with_result=False)
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Forward").click()
    idle(page)
    page.fill("#train-steps", "5")
    page.get_by_role("button", name="Train steps").click()
    idle(page)
    page.get_by_role("button", name="Evaluate").click()
    idle(page)
    choose_preset(page, "tiny")
    step_and_wait(page, then_idle=True)
    click_cell(page, 0, 0, 0, with_result=False)
    choose_preset(page, "deep")
    choose_preset(page, "lenet5")
    page.wait_for_timeout(500)
    assert problems.messages == []


# --- 13. the default input is a training digit; trained-on test digits are not "held out" ------

def test_default_input_is_a_train_digit_and_evaluation_leaves_out_trained_test_digits(open_page):
    page, problems = open_page()
    assert page.inner_text("#input-caption").startswith("MNIST train #0")
    assert page.input_value("#mnist-split") == "train"
    set_speed(page, "live")
    step_and_wait(page, then_idle=True)
    assert "Your input is sample 1 of the batch" in page.inner_text("#batch-strip")
    sent = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/evaluate") else None)
    page.get_by_role("button", name="Evaluate").click()
    idle(page)
    assert sent[-1].get("exclude") in (None, [])  # a train digit: nothing to leave out
    page.select_option("#mnist-split", "test")
    page.wait_for_function("() => document.getElementById('mnist-page').textContent.includes('of 1000')")
    page.locator("#mnist-grid .thumb").nth(4).click()
    page.wait_for_function("() => document.getElementById('input-caption').textContent.startsWith('MNIST test #4')")
    idle(page)
    step_and_wait(page, then_idle=True)
    page.get_by_role("button", name="Evaluate").click()
    idle(page)
    assert sent[-1]["exclude"] == [4]
    result = page.inner_text("#eval-result")
    assert "leaving out the test digit you trained on: #4" in result
    assert "on 999 held-out digits" in result or "held-out digits" in result
    assert problems.messages == []


# --- 10. a drawing is used when the pen lifts, and drawings and uploads ask for their label -----

def test_a_drawing_is_used_when_the_pen_lifts_once_its_label_is_chosen(open_page, tmp_path):
    page, problems = open_page()
    set_speed(page, "live")
    page.get_by_role("tab", name="Draw").click()
    assert page.input_value("#label-select") == ""  # no silent 0
    draw_a_stroke(page)
    page.wait_for_function("() => document.getElementById('input-caption').textContent.includes('which digit')")
    # Step before a label is chosen does not train on the previous digit: it asks for the label
    page.get_by_role("button", name="Step", exact=True).click()
    page.locator("#error-banner").wait_for(state="visible")
    assert "Choose which digit" in banner_text(page)
    idle(page)
    assert page.evaluate("window.cnnviz.app.session.step") == 0
    page.get_by_role("button", name="Dismiss").click()
    before = page.evaluate("window.cnnviz.renders")
    page.select_option("#label-select", "1")
    page.wait_for_function("n => window.cnnviz.renders > n && document.getElementById('input-caption').textContent.includes('drawing')", arg=before)
    assert "label 1" in page.inner_text("#input-caption")
    step_and_wait(page, then_idle=True)  # no "Use drawing" step: the drawing is the input
    request = page.evaluate("window.cnnviz.lastStepRequest.input")
    assert request["kind"] == "pixels" and request["label"] == 1
    # a second stroke refines the same digit: used at once with its label
    before = page.evaluate("window.cnnviz.renders")
    draw_a_stroke(page)
    page.wait_for_function("n => window.cnnviz.renders > n", arg=before)
    assert "label 1" in page.inner_text("#input-caption")
    # an upload asks for its label too
    image = Image.new("L", (60, 60), 0)
    ImageDraw.Draw(image).line([(30, 8), (30, 52)], fill=255, width=7)
    path = tmp_path / "one.png"
    image.save(path)
    page.get_by_role("tab", name="Upload").click()
    page.set_input_files("#upload-file", str(path))
    page.wait_for_function("() => document.getElementById('input-caption').textContent.includes('one.png')")
    assert page.input_value("#label-select") == ""
    assert "which digit" in page.inner_text("#input-caption")
    page.select_option("#label-select", "1")
    page.wait_for_function("() => window.cnnviz.app.inputs.current.description.includes('one.png')")
    idle(page)
    assert "label 1" in page.inner_text("#input-caption")
    assert problems.messages == []


# --- 6. Reset can be undone; Space plays only from the page, never from a control --------------

def test_reset_can_be_undone_and_space_never_plays_from_a_control(open_page):
    page, problems = open_page()
    set_speed(page, "live")
    step_and_wait(page, then_idle=True)
    step_and_wait(page, then_idle=True)
    trained_id = page.evaluate("window.cnnviz.app.session.id")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("r")
    page.locator("#undo-bar").wait_for(state="visible")
    idle(page)
    assert page.evaluate("window.cnnviz.app.session.step") == 0
    assert "step 2" in page.inner_text("#undo-bar")
    page.get_by_role("button", name="Undo reset").click()
    page.wait_for_function("id => window.cnnviz.app.session.id === id", arg=trained_id)
    idle(page)
    assert page.evaluate("window.cnnviz.app.session.step") == 2
    assert "step 2" in page.inner_text("#session-status")
    assert page.evaluate("window.cnnviz.app.history.steps") == [1, 2]
    assert page.evaluate("document.getElementById('curves-plot').data[0].x.length") == 2
    assert page.locator("#undo-bar").is_hidden()
    # Space on a checkbox ticks it and does not start Play
    page.focus("#own-gradient")
    page.keyboard.press(" ")
    page.wait_for_timeout(300)
    assert page.evaluate("window.cnnviz.app.playing") is False
    page.focus("#speed")
    page.keyboard.press(" ")
    page.wait_for_timeout(300)
    assert page.evaluate("window.cnnviz.app.playing") is False
    # from the page itself, Space plays and pauses
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press(" ")
    page.wait_for_function("() => window.cnnviz.app.playing")
    page.keyboard.press(" ")
    idle(page)
    assert problems.messages == []


# --- 5. a hover readout names the view's quantity and goes when the view changes ---------------

def readout(page, layer: int) -> str:
    return page.inner_text(f'.layer-card[data-layer="{layer}"] .layer-readout').strip()


def hover_cell(page, layer: int, x: int, y: int) -> None:
    page.locator(f'.layer-card[data-layer="{layer}"] .layer-plot').scroll_into_view_if_needed()
    page.wait_for_timeout(200)
    point = page.evaluate(CELL_POINT_JS, [layer, x, y])
    page.mouse.move(point["x"], point["y"])


def test_hover_readouts_name_the_shown_quantity_and_clear_on_a_view_change(open_page):
    page, problems = open_page()
    set_speed(page, "live")
    step_and_wait(page, then_idle=True)
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("5")  # dW
    page.wait_for_function("() => document.querySelector('.layer-card[data-layer=\"0\"]').dataset.view === 'dW'")
    hover_cell(page, 0, 1, 1)
    assert readout(page, 0).startswith("dW[0,0,1,1] = ")
    page.mouse.move(2, 2)
    hover_cell(page, 0, 1, 1)
    page.keyboard.press("4")  # W: the dW readout must not stay
    page.wait_for_function("() => document.querySelector('.layer-card[data-layer=\"0\"]').dataset.view === 'W'")
    assert readout(page, 0) == ""
    hover_cell(page, 0, 1, 1)
    assert readout(page, 0).startswith("W[0,0,1,1] = ")
    page.keyboard.press("3")  # δ
    page.wait_for_function("() => document.querySelector('.layer-card[data-layer=\"0\"]').dataset.view === 'delta'")
    hover_cell(page, 0, 2, 3)
    assert readout(page, 0).startswith("δ[0,3,2] = ")
    page.keyboard.press("1")
    page.wait_for_function("() => document.querySelector('.layer-card[data-layer=\"-1\"]').dataset.view === 'a'")
    hover_cell(page, -1, 5, 6)
    assert readout(page, -1).startswith("x[0,6,5] = ")
    assert problems.messages == []


# --- 9. max-pool winners: off by default; outlined (never a veil), windows of zeros skipped -----

def test_max_pool_winners_are_off_by_default_and_outlined_without_a_veil(open_page, screenshot):
    page, problems = open_page()
    assert not page.is_checked("#mark-winners")
    assert page.evaluate("window.cnnviz.app.strip.modelOf(0).winnerCount") == 0
    plain = page.evaluate(PICTURE_PIXELS_JS, 0)
    assert plain["scale"] == 1
    before = page.evaluate("window.cnnviz.renders")
    page.check("#mark-winners")
    page.wait_for_function("n => window.cnnviz.renders > n", arg=before)
    winners = page.evaluate("""() => { const w = window.cnnviz.app.strip.cards.get(0).model.winners;
      return {count: w.count, skipped: w.skipped}; }""")
    assert winners["skipped"] > 0  # LeNet-5's conv1 has windows of zeros (a dead ReLU region)
    assert winners["count"] + winners["skipped"] == 6 * 14 * 14
    marked = page.evaluate(PICTURE_PIXELS_JS, 0)
    scale = marked["scale"]
    assert scale >= 3
    cells = page.evaluate("""() => { const m = window.cnnviz.app.strip.cards.get(0).model; const w = m.winners.mask;
      let win = null, lose = null;
      for (let y = 0; y < 28 && (!win || !lose); y++) for (let x = 0; x < 28; x++) {
        const k = y * 28 + x;   // map 0 is the top-left tile
        if (w[k] && !win) win = [x, y]; if (!w[k] && !lose) lose = [x, y]; }
      return {win, lose}; }""")
    wx, wy = cells["win"]
    lx, ly = cells["lose"]
    winner_colour = (0x00, 0xC2, 0xA8)
    assert pixel(marked, wx * scale, wy * scale) == winner_colour  # its outline
    assert pixel(marked, wx * scale + scale // 2, wy * scale + scale // 2) == pixel(plain, wx, wy)  # its colour
    for sx in range(scale):  # a loser keeps the colour bar's colour: no veil
        for sy in range(scale):
            assert pixel(marked, lx * scale + sx, ly * scale + sy) == pixel(plain, lx, ly)
    screenshot(page, "newcomer-09-winners-outlined")
    assert problems.messages == []


# --- 15. errors in plain words; an upload that is no digit is warned about ---------------------

def test_errors_are_plain_words_and_a_non_digit_upload_is_warned_about(open_page, tmp_path):
    page, problems = open_page()
    page.fill("#batch-size", "100000")
    page.get_by_role("button", name="Step", exact=True).click()
    page.locator("#error-banner").wait_for(state="visible")
    no_developer_words(banner_text(page))
    page.get_by_role("button", name="Dismiss").click()
    page.fill("#batch-size", "32")
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\x89PNG" + bytes(9 * 1024 * 1024))
    page.get_by_role("tab", name="Upload").click()
    page.set_input_files("#upload-file", str(huge))
    page.locator("#error-banner").wait_for(state="visible")
    text = banner_text(page)
    assert "8 MB" in text and "resize" in text, text
    no_developer_words(text)
    page.get_by_role("button", name="Dismiss").click()
    noise = tmp_path / "noise.png"
    import numpy as np
    Image.fromarray((np.random.default_rng(0).random((200, 300)) * 255).astype("uint8")).save(noise)
    page.set_input_files("#upload-file", str(noise))
    page.locator("#input-warning").wait_for(state="visible")
    assert "does not look like a digit" in page.inner_text("#input-warning")
    one = tmp_path / "one.png"
    image = Image.new("L", (60, 60), 0)
    ImageDraw.Draw(image).line([(30, 8), (30, 52)], fill=255, width=7)
    image.save(one)
    page.set_input_files("#upload-file", str(one))
    page.wait_for_function("() => document.getElementById('input-caption').textContent.includes('one.png')")
    assert page.locator("#input-warning").is_hidden()
    assert all("422" in m or "413" in m for m in problems.messages), problems.messages


# --- 8. readable numbers, an unclipped "label" tag, a high learning rate warned, focus rings -----

def test_numbers_read_as_written_tags_fit_high_rates_warn_and_focus_shows(open_page):
    page, problems = open_page()
    shown = page.evaluate("""async () => { const f = await import('/static/js/format.js');
      return [f.formatNumber(4.952e-4), f.formatNumber(9.337e11), f.formatNumber(-2.5e-7), f.formatPrecise(1.234567e-9), f.formatShort(-3.1e5)]; }""")
    assert shown == ["4.952 × 10⁻⁴", "9.337 × 10¹¹", "-2.5 × 10⁻⁷", "1.23457 × 10⁻⁹", "-3.1 × 10⁵"]
    # the prediction chart at p = 1 on the label: its "label" tag is inside the chart
    page.evaluate("""async () => { const c = await import('/static/js/views/charts.js');
      const prediction = [0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
      await c.drawPrediction(document.getElementById('prediction-plot'), {prediction, label: 3, layers: []}); }""")
    tag = page.evaluate("""() => { const plot = document.getElementById('prediction-plot');
      const svg = plot.querySelector('svg.main-svg').getBoundingClientRect();
      const text = [...plot.querySelectorAll('.annotation-text')].find(t => t.textContent === 'label').getBoundingClientRect();
      return {svgTop: svg.top, top: text.top, bottom: text.bottom}; }""")
    assert tag["top"] >= tag["svgTop"], tag
    # a learning rate of 5 for SGD is warned about before any step
    assert page.locator("#lr-warning").is_hidden()
    page.fill("#learning-rate", "5")
    page.locator("#lr-warning").wait_for(state="visible")
    assert "unusually high" in page.inner_text("#lr-warning")
    page.fill("#learning-rate", "0.05")
    page.locator("#lr-warning").wait_for(state="hidden")
    page.select_option("#optimizer", "adam")
    page.locator("#lr-warning").wait_for(state="visible")  # 0.05 is a lot for Adam
    # every control shows where the keyboard is: Import… (a label over a hidden file input) too
    page.focus("#import-session")
    ring = page.evaluate("() => getComputedStyle(document.querySelector('label[for=import-session]')).outlineStyle")
    assert ring != "none"
    without_ring = []
    page.locator("body").click(position={"x": 5, "y": 5})
    for _ in range(45):
        page.keyboard.press("Tab")
        info = page.evaluate("""() => { const el = document.activeElement;
          const target = el.id === 'import-session' ? document.querySelector('label[for=import-session]')
            : el.type === 'radio' ? el.closest('label') : el;
          const style = getComputedStyle(target);
          return {id: el.id || el.textContent.slice(0, 20), ring: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2}; }""")
        if not info["ring"]:
            without_ring.append(info["id"])
    assert without_ring == [], without_ring
    assert problems.messages == []


# --- 4. every number of `tiny` is printed, fits its cell and keeps its sign --------------------

TINY_TEXTS_JS = """() => {
  const strip = window.cnnviz.app.strip;
  const measure = document.createElement('canvas').getContext('2d');
  measure.font = '11px system-ui, sans-serif';
  const out = [];
  for (const card of strip.cards.values()) {
    const model = card.model;
    if (!model || model.kind === 'none' || card.plot.hidden) continue;
    const shown = strip.shownMatrix(card.index);
    const values = shown.flat().filter(v => v !== null && Number.isFinite(v));
    const texts = card.picture && card.picture.texts ? card.picture.texts.text : [];
    const widest = Math.max(0, ...texts.map(t => measure.measureText(t).width));
    const negatives = values.filter(v => v < 0).length;
    out.push({layer: card.index, view: model.view, cells: values.length, texts: texts.length,
              widest, cellW: model.cellW, negatives, minusTexts: texts.filter(t => t.startsWith('-')).length});
  }
  return out;
}"""


def test_every_number_of_tiny_is_printed_legibly(open_page, screenshot):
    page, problems = open_page()
    choose_preset(page, "tiny")
    set_speed(page, "live")
    step_and_wait(page, then_idle=True)
    page.locator("body").click(position={"x": 5, "y": 5})
    for key, view in (("1", "a"), ("2", "z"), ("3", "delta"), ("4", "W"), ("5", "dW"), ("6", "db")):
        page.keyboard.press(key)
        page.wait_for_function("v => document.querySelector('.layer-card[data-layer=\"0\"]').dataset.view === v", arg=view)
        page.wait_for_timeout(200)
        for card in page.evaluate(TINY_TEXTS_JS):
            assert card["texts"] == card["cells"], (view, card)  # every number printed (the 6x6 input too)
            assert card["widest"] <= card["cellW"] - 2, (view, card)  # no number runs into the next
            assert card["minusTexts"] == card["negatives"], (view, card)  # minus signs kept
        if view in ("W", "dW"):
            screenshot(page, f"newcomer-04-tiny-{view}")
    assert problems.messages == []


# --- 12. first load: the hint and the prediction above the fold, classes labelled, a skip link ---

def test_first_load_shows_hint_prediction_and_class_labels_and_skips_to_step(open_page, screenshot):
    page, problems = open_page(1440, 900)
    page.wait_for_function("() => document.getElementById('prediction-brief').textContent.includes('predicted')")
    for selector in (".strip-hint", "#prediction-brief"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["y"] + box["height"] <= 900, (selector, box)
    assert "click any cell" in page.inner_text(".strip-hint")
    output = page.evaluate("window.cnnviz.app.record.trace.layers.length - 1")
    texts = page.evaluate("i => window.cnnviz.app.strip.cards.get(i).picture.texts.text", output)
    assert [t.split(":")[0] for t in texts] == [str(k) for k in range(10)]  # the softmax column's classes
    screenshot(page, "newcomer-12-first-load-1440")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "skip-to-player"
    assert page.locator("#skip-to-player").bounding_box()["y"] >= 0  # shown when focused
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "btn-step"
    before = page.evaluate("window.cnnviz.stepTimings.length")
    page.keyboard.press("Enter")
    page.wait_for_function("n => window.cnnviz.stepTimings.length > n", arg=before)
    assert problems.messages == []


# --- 11. on a phone the player and the active layer stay in view together ----------------------

PHONE_VIEW_JS = """() => {
  const player = document.getElementById('player').getBoundingClientRect();
  const card = document.querySelector('.layer-card[data-state="active"]');
  const box = card ? card.querySelector('.layer-plot:not([hidden])') || card : null;
  const active = box ? box.getBoundingClientRect() : null;
  return {player: [player.top, player.bottom], active: active ? [active.top, active.bottom] : null,
          layer: card ? card.dataset.layer : null, height: window.innerHeight, animating: window.cnnviz.app.animating};
}"""


def test_phone_keeps_the_player_and_the_active_layer_in_view(open_page, screenshot):
    page, problems = open_page(390, 844)
    set_speed(page, "slow")
    page.get_by_role("button", name="Step", exact=True).click()
    page.wait_for_function("() => window.cnnviz.app.animating")
    seen = set()
    for n in range(14):
        page.wait_for_timeout(400)
        view = page.evaluate(PHONE_VIEW_JS)
        if not view["animating"]:
            break
        assert view["player"][0] >= -1 and view["player"][1] <= view["height"], view  # the player on screen
        if view["active"] is not None:
            seen.add(view["layer"])
            assert view["active"][0] >= view["player"][1] - 2 and view["active"][0] < view["height"] - 40, view
        if n == 5:  # what the phone's screen shows (not the whole page)
            page.screenshot(path=str(screenshot(page, "newcomer-11-phone-page")).replace("-page", "-screen"))
    assert len(seen) >= 3, seen  # it followed the animation down the network
    page.evaluate("() => window.cnnviz.app.pause()")
    idle(page)
    assert problems.messages == []


# --- 14. one weight of a 120x400 matrix can be clicked: a click opens a magnifier -------------

def test_a_large_weight_matrix_opens_a_magnifier_to_pick_one_weight(open_page, screenshot):
    page, problems = open_page(1440, 900)
    set_speed(page, "live")
    step_and_wait(page, then_idle=True)
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("4")
    page.wait_for_function("() => document.querySelector('.layer-card[data-layer=\"5\"]').dataset.view === 'W'")
    model = page.evaluate("window.cnnviz.app.strip.modelOf(5)")
    assert (model["mapH"], model["mapW"]) == (120, 400) and model["cellW"] < 1  # dense1: 400 columns in 150 px
    plot = page.locator('.layer-card[data-layer="5"] .layer-plot')
    plot.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    box = plot.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.4)
    zoom = page.locator(".weight-zoom")
    zoom.wait_for(state="visible")
    assert page.locator("#inspector").is_hidden()  # nothing explained yet: a weight is picked first
    row0 = int(zoom.get_attribute("data-row0"))
    col0 = int(zoom.get_attribute("data-col0"))
    assert abs(row0 + 8 - 48) <= 2 and abs(col0 + 8 - 200) <= 2, (row0, col0)
    canvas = zoom.locator("canvas").bounding_box()
    cell = canvas["width"] / 16
    page.mouse.move(canvas["x"] + cell * 3.5, canvas["y"] + cell * 5.5)
    assert page.inner_text(".weight-zoom-readout").startswith(f"W[{row0 + 5},{col0 + 3}] = ")
    screenshot(page, "newcomer-14-weight-magnifier")
    page.mouse.click(canvas["x"] + cell * 3.5, canvas["y"] + cell * 5.5)
    page.wait_for_selector("#inspector:not([hidden])")
    assert page.inner_text("[data-role=inspector-title]") == f"dense1 · W [{row0 + 5},{col0 + 3}]"
    assert zoom.count() == 0
    assert problems.messages == []
