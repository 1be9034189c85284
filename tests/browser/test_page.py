"""The page in a real headless Chromium against the real server: loading, choosing inputs,
stepping, scrubbing, the inspector's arithmetic, drawing, uploading, spec errors, phone width."""

from __future__ import annotations

import math

import pytest
from PIL import Image, ImageDraw
from driving import (
    assert_result_matches,
    click_cell,
    draw_a_stroke,
    set_speed,
    set_view,
    step_and_wait,
    wait_until_still,
)
from pictures import PICTURE_PIXELS_JS, cells_showing_numbers

pytestmark = pytest.mark.browser

# Per card: what it shows and how many finite numbers its picture holds (the strip draws every
# card as one image trace of a single Plotly figure laid over the cards' plot boxes).
CARDS_JS = """() => [...document.querySelectorAll('.layer-card')].map(card => {
  const strip = window.cnnviz.app.strip;
  const layer = Number(card.dataset.layer);
  const plot = card.querySelector('.layer-plot');
  const shown = strip.shownMatrix(layer);
  let finite = 0, cells = 0, maxAbs = 0;
  if (shown) for (const row of shown) for (const v of row) {
    if (v === null) continue;
    cells += 1;
    if (Number.isFinite(v)) { finite += 1; maxAbs = Math.max(maxAbs, Math.abs(v)); }
  }
  const model = strip.modelOf(layer);
  const box = plot.getBoundingClientRect();
  const image = shown ? strip.imageBox(layer) : null;
  return {layer, type: card.dataset.type, view: card.dataset.view, gradient: card.dataset.gradient,
          state: card.dataset.state, empty: card.dataset.empty === 'true', cells, finite, maxAbs,
          plotSize: image ? [image.width, image.height] : null,
          boxOffset: image ? [image.left - box.left, image.top - box.top] : null,
          designedSize: shown ? [model.plotWidth, model.plotHeight] : null};
})"""

# Page coordinates of cell (column x, row y) of a layer card's picture, and its value.
def cards(page) -> list[dict]:
    return page.evaluate(CARDS_JS)


def assert_heatmaps_keep_their_cell_size(shown: list[dict]) -> None:
    """Plotly drew each card's picture at the size the view model designed (no squashed maps),
    on the card's plot box (inside its 2 px margin)."""
    for card in shown:
        if card["plotSize"] is not None:
            assert abs(card["plotSize"][0] - card["designedSize"][0]) <= 1.5, card
            assert abs(card["plotSize"][1] - card["designedSize"][1]) <= 1.5, card
            assert abs(card["boxOffset"][0] - 2) <= 1.5 and abs(card["boxOffset"][1] - 2) <= 1.5, card


def test_page_loads_without_console_errors_and_draws_every_layer(open_page, screenshot):
    page, problems = open_page()
    for name in ("Forward", "Backward", "Update", "Step", "Play", "Pause", "Reset"):
        button = page.get_by_role("button", name=name, exact=True)
        assert button.evaluate("el => el.tagName") == "BUTTON"
        assert button.inner_text().strip() == name
    assert page.get_attribute("#upload-file", "type") == "file"
    assert page.evaluate("typeof window.Plotly") == "object"
    shown = cards(page)
    assert [c["layer"] for c in shown] == list(range(-1, 8))  # input + LeNet-5's 8 layers
    for card in shown:
        assert card["cells"] > 0 and card["finite"] == card["cells"], card
    # Every colour scale has its legend, labelled at both ends.
    legends = page.evaluate("() => [...document.querySelectorAll('.layer-card')].map(c => [...c.querySelectorAll('.colorbar:not([hidden]) .colorbar-ticks span')].map(s => s.textContent))")
    assert all(len(labels) == 3 for labels in legends), legends
    width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width[0] <= width[1]
    screenshot(page, "01-loaded-1280")
    assert problems.messages == []


def test_step_on_a_chosen_mnist_sample_fills_every_layer_for_every_view(open_page, screenshot):
    page, problems = open_page()
    page.locator("#mnist-grid .thumb").nth(7).click()
    page.wait_for_function("() => document.getElementById('input-caption').textContent.includes('#7')")
    set_speed(page, "live")
    step_and_wait(page)
    assert "step 1" in page.inner_text("#session-status")
    for view in ("a", "z", "delta"):
        set_view(page, view)
        shown = cards(page)
        assert_heatmaps_keep_their_cell_size(shown)
        for card in shown:
            assert card["cells"] > 0 and card["finite"] == card["cells"], (view, card)
    assert any(c["maxAbs"] > 0 for c in cards(page) if c["layer"] >= 0)
    screenshot(page, "02-after-step-delta")
    for view in ("W", "dW", "db", "a"):
        set_view(page, view)
        shown = cards(page)
        assert_heatmaps_keep_their_cell_size(shown)
        for card in shown:
            if view == "a":
                continue
            if card["type"] in ("conv", "dense"):
                assert card["cells"] > 0 and card["finite"] == card["cells"], (view, card)
            else:
                assert card["empty"], (view, card)
    screenshot(page, "03-after-step-dW")
    # Per-map colour ranges: each map scaled on its own, the colour bar says so.
    set_view(page, "z")
    before = page.evaluate("window.cnnviz.renders")
    page.select_option("#range-mode", "map")
    page.wait_for_function("n => window.cnnviz.renders > n", arg=before)
    conv1 = page.evaluate("""() => { const card = document.querySelector('.layer-card[data-layer="0"]');
      const values = window.cnnviz.app.strip.shownMatrix(0).flat().filter(v => v !== null);
      return {ticks: [...card.querySelectorAll('.colorbar-ticks span')].map(s => s.textContent),
              low: Math.min(...values), high: Math.max(...values)}; }""")
    assert conv1["ticks"] == ["−max", "0", "+max"]
    assert 0 <= conv1["low"] and conv1["high"] <= 1
    assert "per map" in page.inner_text('.layer-card[data-layer="0"] .layer-view')
    assert page.evaluate("document.getElementById('curves-plot').data[0].y.length") == 1
    assert problems.messages == []


def test_pause_stops_a_step_animation_where_it_is(open_page):
    page, problems = open_page()
    set_speed(page, "very slow")
    page.get_by_role("button", name="Step", exact=True).click()
    page.wait_for_function("() => Number(document.getElementById('timeline').value) >= 2 && !document.getElementById('btn-pause').disabled")
    page.get_by_role("button", name="Pause", exact=True).click()
    page.wait_for_function("() => !window.cnnviz.app.actionRunning")
    stopped = page.evaluate("() => document.getElementById('timeline').value")
    page.wait_for_timeout(2000)
    assert page.evaluate("() => document.getElementById('timeline').value") == stopped
    assert int(stopped) < 10 and page.is_disabled("#btn-pause")
    assert problems.messages == []


def test_timeline_scrubs_forward_and_backward_through_the_phases(open_page, screenshot):
    page, problems = open_page()
    set_speed(page, "live")
    step_and_wait(page)
    timeline = page.locator("#timeline")
    phases = int(timeline.get_attribute("max")) + 1
    assert phases == 1 + 8 + 1 + 8 + 1 + 1 + 3  # input, forward, loss, backward, dL/dx, grads, update
    timeline.focus()
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")  # forward through conv1 then maxpool1
    page.wait_for_function("() => document.getElementById('phase-label').textContent.includes('maxpool1')")
    states = {c["layer"]: c["state"] for c in cards(page)}
    assert states[0] == "done" and states[1] == "active" and states[2] == "pending"
    assert {c["view"] for c in cards(page)} == {"a"}
    screenshot(page, "04-timeline-forward-maxpool1")
    # Backward phase of conv2: later layers done, conv2 active, earlier ones pending, deltas shown.
    backward_conv2 = 1 + 8 + 1 + (8 - 1 - 2)
    timeline.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", str(backward_conv2))
    page.wait_for_function("() => document.getElementById('phase-label').textContent.includes('δ of conv2')")
    states = {c["layer"]: c["state"] for c in cards(page)}
    assert states[2] == "active" and states[3] == "done" and states[1] == "pending"
    assert all(c["view"] == "delta" for c in cards(page) if c["layer"] >= 0)
    screenshot(page, "05-timeline-backward-conv2")
    page.keyboard.press("End")
    page.wait_for_function("() => document.getElementById('phase-label').textContent.includes('weights after')")
    assert problems.messages == []


def test_clicking_conv_pixels_shows_arithmetic_that_matches_the_engine(open_page, screenshot):
    page, problems = open_page()
    set_speed(page, "live")
    step_and_wait(page)
    set_view(page, "z")
    value = click_cell(page, 0, 12, 9)  # conv1 map 0, row 9, column 12
    computed, engine = assert_result_matches(page)
    assert math.isclose(engine, value, rel_tol=1e-6, abs_tol=1e-7)  # the clicked heatmap's value
    assert "Σ x·W + b" in page.inner_text("#inspector")
    assert page.locator("#inspector .patch-grid table").count() == 2  # receptive field and kernel
    assert "25 terms" in page.inner_text("#inspector")
    screenshot(page, "06-inspector-conv1-z")

    set_view(page, "delta")
    click_cell(page, 2, 3, 3)  # conv2's delta: routed back from maxpool2's winners, times relu'
    assert_result_matches(page)
    assert_result_matches(page, "[data-role=inspector-delta]")
    click_cell(page, 0, 5, 5)  # conv1's delta: from maxpool1's winner routing
    assert_result_matches(page)
    click_cell(page, 3, 1, 1)  # maxpool2's delta: conv... flatten and dense weights carry it back
    assert_result_matches(page)
    screenshot(page, "07-inspector-delta")

    set_view(page, "dW")
    click_cell(page, 0, 2, 2)  # conv1 dW[0,0,2,2] = Σ input · delta
    assert_result_matches(page)
    set_view(page, "a")
    click_cell(page, 1, 3, 4)  # maxpool1: the window and its winner
    assert_result_matches(page)
    assert page.locator("#inspector td.winner").count() == 1
    page.keyboard.press("Escape")
    page.wait_for_selector("#inspector", state="hidden")
    assert problems.messages == []


def test_drawing_on_the_canvas_is_preprocessed_and_traced(open_page, screenshot):
    page, problems = open_page()
    page.get_by_role("tab", name="Draw").click()
    draw_a_stroke(page)
    before = page.evaluate("window.cnnviz.renders")
    page.wait_for_function("() => window.cnnviz.app.inputs.pending")  # used when the pen lifts, once labelled
    page.locator("#label-select").select_option("1")
    page.wait_for_function("n => window.cnnviz.renders > n && document.getElementById('input-caption').textContent.includes('drawing')", arg=before)
    caption = page.inner_text("#input-caption")
    assert "label 1" in caption
    input_card = cards(page)[0]
    assert input_card["cells"] == 28 * 28 and 0.5 < input_card["maxAbs"] <= 1
    # A vertical stroke: MNIST-style centring puts mass in the middle columns, none at the edges.
    column_mass = page.evaluate("""() => { const z = window.cnnviz.app.strip.shownMatrix(-1);
      return z[0].map((_, j) => z.reduce((s, row) => s + row[j], 0)); }""")
    assert sum(column_mass[10:18]) > 0.9 * sum(column_mass)
    assert all(c["finite"] == c["cells"] > 0 for c in cards(page))
    screenshot(page, "08-drawn-digit")
    assert problems.messages == []


def test_uploaded_png_is_shown_preprocessed_and_traced(open_page, screenshot, tmp_path):
    image = Image.new("RGB", (120, 160), "white")
    pen = ImageDraw.Draw(image)
    pen.line([(20, 20), (100, 20), (55, 150)], fill="black", width=14)  # a dark 7 on white paper
    path = tmp_path / "seven.png"
    image.save(path)
    page, problems = open_page()
    page.get_by_role("tab", name="Upload").click()
    before = page.evaluate("window.cnnviz.renders")
    page.set_input_files("#upload-file", str(path))
    page.wait_for_function("() => window.cnnviz.app.inputs.pending")  # an upload asks for its label
    page.locator("#label-select").select_option("7")
    page.wait_for_function("n => window.cnnviz.renders > n && document.getElementById('input-caption').textContent.includes('seven.png')", arg=before)
    assert "label 7" in page.inner_text("#input-caption")
    pixels = page.evaluate("window.cnnviz.app.strip.shownMatrix(-1)")
    assert len(pixels) == 28 and len(pixels[0]) == 28
    values = [v for row in pixels for v in row]
    assert max(pixels[0] + pixels[1]) < 0.05  # MNIST's empty margin above the digit
    assert sum(values) / len(values) < 0.3 < max(values)  # inverted: a light digit on dark
    assert page.evaluate("document.getElementById('prediction-plot').data[0].y.length") == 10
    screenshot(page, "09-uploaded-png")
    assert problems.messages == []


def test_invalid_architecture_shows_the_engine_error_inline_and_keeps_the_network(open_page, screenshot):
    page, problems = open_page()
    status_before = page.inner_text("#session-status")
    page.locator("#spec-details > summary").click()
    bad = ('{"input_shape": [1, 28, 28], "layers": [\n'
           '  {"type": "conv", "filters": 2, "kernel": 5},\n'
           '  {"type": "maxpool", "size": 2},\n'
           '  {"type": "conv", "filters": 2, "kernel": 30},\n'
           '  {"type": "flatten"},\n'
           '  {"type": "dense", "units": 10, "activation": "softmax"}],\n'
           ' "loss": "cross_entropy"}')
    page.fill("#spec-editor", bad)
    page.get_by_role("button", name="Apply JSON").click()
    error = page.locator("#spec-error")
    error.wait_for(state="visible")
    assert "layer 2" in error.inner_text() and "kernel" in error.inner_text()
    assert page.get_attribute("#spec-editor", "aria-invalid") == "true"
    selected = page.evaluate("(() => { const t = document.getElementById('spec-editor'); return t.value.slice(t.selectionStart, t.selectionEnd); })()")
    assert '"kernel": 30' in selected  # the offending layer is selected in the editor
    assert page.inner_text("#session-status") == status_before
    screenshot(page, "10-invalid-spec")
    page.fill("#spec-editor", "{not json")
    page.get_by_role("button", name="Apply JSON").click()
    page.wait_for_function("() => document.getElementById('spec-error').textContent.includes('Not valid JSON')")
    # 422s are expected answers here and are shown inline; the browser logs the failed fetch.
    assert all("422" in m for m in problems.messages), problems.messages


def test_api_errors_show_a_clear_message(open_page, screenshot, tmp_path):
    page, problems = open_page()
    page.fill("#batch-size", "100000")
    page.get_by_role("button", name="Step", exact=True).click()
    banner = page.locator("#error-banner")
    banner.wait_for(state="visible")
    assert "batch_size" in banner.inner_text() and "422" not in banner.inner_text()  # plain words, no HTTP code
    screenshot(page, "11-api-error")
    page.get_by_role("button", name="Dismiss").click()
    banner.wait_for(state="hidden")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("these are not pixels")
    page.get_by_role("tab", name="Upload").click()
    page.set_input_files("#upload-file", str(not_an_image))
    banner.wait_for(state="visible")
    assert "Error 4" not in banner.inner_text() and banner.inner_text().strip()
    assert "MNIST train #0" in page.inner_text("#input-caption")  # the input in use is kept
    assert all("422" in m or "415" in m for m in problems.messages), problems.messages


def test_phone_width_has_no_horizontal_scroll(open_page, screenshot):
    page, problems = open_page(390, 844)
    set_speed(page, "live")
    step_and_wait(page)
    for view in ("a", "W"):
        set_view(page, view)
        width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert width[0] <= width[1], (view, width)
    widest = page.evaluate("Math.max(...[...document.querySelectorAll('.layer-card')].map(c => c.getBoundingClientRect().right))")
    assert widest <= 390
    screenshot(page, "12-phone-390")
    assert problems.messages == []


def test_keyboard_shortcuts_step_switch_views_and_scrub(open_page):
    page, problems = open_page()
    set_speed(page, "live")
    page.locator("body").click(position={"x": 5, "y": 5})
    before = page.evaluate("window.cnnviz.stepTimings.length")
    page.keyboard.press("s")
    page.wait_for_function("n => window.cnnviz.stepTimings.length > n", arg=before)
    page.keyboard.press("3")
    page.wait_for_function("() => [...document.querySelectorAll('.layer-card')].filter(c => c.dataset.layer !== '-1').every(c => c.dataset.view === 'delta')")
    # Cells are reachable without a mouse: focus a heatmap, move with the arrows, Enter explains.
    page.keyboard.press("2")
    page.wait_for_function("() => document.querySelector('.layer-card[data-layer=\"0\"]').dataset.view === 'z'")
    page.focus('.layer-card[data-layer="0"] .layer-plot')
    for key in ("ArrowRight", "ArrowRight", "ArrowRight", "ArrowDown", "ArrowDown"):
        page.keyboard.press(key)
    assert page.inner_text('.layer-card[data-layer="0"] .layer-readout').startswith("z[0,2,3] =")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('[data-role=inspector-title]').textContent === 'conv1 · z [0,2,3]'")
    assert_result_matches(page)
    page.keyboard.press("Escape")
    page.evaluate("() => document.activeElement.blur()")  # arrows scrub again once the map lets go
    page.keyboard.press("0")
    page.keyboard.press("Home")
    page.wait_for_function("() => document.getElementById('timeline').value === '0'")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.getElementById('timeline').value === '1'")
    assert problems.messages == []


def test_play_keeps_training_with_live_curves_until_pause(open_page, screenshot):
    page, problems = open_page()
    set_speed(page, "live")
    drawn_points = "() => document.querySelector('#curves-plot .scatterlayer .trace')?.querySelectorAll('.points path').length ?? 0"
    page.get_by_role("button", name="Play", exact=True).click()
    # while playing, the lines grow (live curves have no markers) ...
    page.wait_for_function("() => (document.getElementById('curves-plot').data?.[0]?.x.length ?? 0) >= 3", timeout=60_000)
    page.get_by_role("button", name="Pause", exact=True).click()
    page.wait_for_function("() => !document.getElementById('btn-play').disabled")  # at once
    page.wait_for_function("() => !window.cnnviz.app.actionRunning")  # the step in flight has landed
    # ... and after Pause the curves are drawn whole: a marker for every step
    page.wait_for_function("() => !document.getElementById('curves-plot').liveShape.live")
    steps = page.evaluate(drawn_points)
    assert steps == page.evaluate("() => window.cnnviz.app.session.step") >= 3
    assert page.evaluate("document.getElementById('curves-plot').data[0].y.length") == steps
    page.wait_for_timeout(1500)
    assert page.evaluate(drawn_points) == steps
    accuracy = page.evaluate("document.getElementById('curves-plot').data[1].y")
    assert all(0 <= a <= 1 for a in accuracy)
    screenshot(page, "13-after-play")
    assert problems.messages == []


def test_a_step_redraws_the_strip_by_relayout_of_its_pictures_only(open_page):
    page, problems = open_page()
    set_speed(page, "live")
    set_view(page, "a")
    step_and_wait(page)
    before = page.evaluate("() => { const s = window.cnnviz.app.strip; return {draws: s.figureDraws, whole: s.wholeDraws,"
                           " sources: [...s.figure.querySelectorAll('image')].map(i => i.getAttribute('href'))}; }")
    step_and_wait(page)
    after = page.evaluate("() => { const s = window.cnnviz.app.strip; return {draws: s.figureDraws, whole: s.wholeDraws,"
                          " sources: [...s.figure.querySelectorAll('image')].map(i => i.getAttribute('href'))}; }")
    assert after["draws"] > before["draws"]  # the strip was drawn again ...
    assert after["whole"] == before["whole"]  # ... without rebuilding the figure
    assert len(after["sources"]) == len(before["sources"]) == 9  # input and 8 layers, one picture each
    changed = sum(a != b for a, b in zip(after["sources"], before["sources"]))
    assert changed >= 8  # every map that a step changes shows its new picture
    # uncompressed pictures, written straight from the pixels
    assert all(source.startswith("data:image/bmp;base64,") for source in after["sources"])
    assert problems.messages == []


def test_tiny_preset_prints_every_number_and_its_arithmetic(open_page, screenshot):
    page, problems = open_page()
    page.select_option("#preset", "tiny")
    page.wait_for_function("() => document.getElementById('session-status').textContent.startsWith('tiny')")
    page.wait_for_function("() => document.querySelectorAll('.layer-card').length === 5")
    set_view(page, "z")
    texts = page.evaluate("window.cnnviz.app.strip.cards.get(0).picture.texts.text")
    z = page.evaluate("window.cnnviz.app.record.trace.layers[0].z")
    values = [v for m in z for row in m for v in row]
    assert len(texts) == len(values) == 32  # 2 maps of 4x4: values printed in the cells
    for text, value in zip(sorted(texts, key=float), sorted(values)):
        assert abs(float(text) - value) <= max(0.005, abs(value) * 0.05), (text, value)
    picture = page.evaluate(PICTURE_PIXELS_JS, 0)
    assert picture["shown"], "the card's picture is not the image the figure shows"
    assert cells_showing_numbers(page, 0) == 32  # every number shown over its cell, on screen
    click_cell(page, 0, 1, 2)
    assert_result_matches(page)
    assert "9 terms" in page.inner_text("#inspector")
    screenshot(page, "14-tiny-inspector")
    set_view(page, "delta")
    click_cell(page, 3, 0, 0)  # the sigmoid output: delta = (a - y) / N
    assert_result_matches(page)
    # One output unit: the target is 1 for the chosen digit (0 by default); the sample shown is not a 0.
    digit = page.evaluate("window.cnnviz.app.record.trace.label")
    assert digit != 0
    assert f"target 0 for digit {digit}" in page.inner_text("#phase-label")
    page.select_option("#positive-class", str(digit))
    page.wait_for_function("d => document.getElementById('phase-label').textContent.includes(`target 1 for digit ${d}`)", arg=digit)
    assert f"digit is {digit}" in page.inner_text("#session-status")
    assert problems.messages == []


def test_exported_session_imports_with_its_weights_and_history(open_page, tmp_path):
    page, problems = open_page()
    page.fill("#train-steps", "3")
    page.get_by_role("button", name="Train steps").click()
    page.wait_for_function("() => document.getElementById('session-status').textContent.includes('step 3')")
    page.wait_for_function("() => !window.cnnviz.app.actionRunning")
    loss_before = page.evaluate("() => window.cnnviz.app.record.trace.loss")
    with page.expect_download() as download:
        page.get_by_text("Export session").click()
    saved = tmp_path / "session.npz"
    download.value.save_as(saved)
    page.get_by_role("button", name="Reset").click()
    page.wait_for_function("() => document.getElementById('session-status').textContent.includes('step 0')")
    page.set_input_files("#import-session", str(saved))
    page.wait_for_function("() => document.getElementById('session-status').textContent.includes('step 3')")
    page.wait_for_function("() => document.getElementById('curves-plot').data[0].y.length === 3")
    page.wait_for_function("l => Math.abs(window.cnnviz.app.record.trace.loss - l) < 1e-6", arg=loss_before)
    assert problems.messages == []


def test_forward_and_backward_change_nothing_until_update_trains(open_page, screenshot):
    page, problems = open_page()
    set_speed(page, "fast")
    page.get_by_role("button", name="Forward", exact=True).click()
    page.wait_for_function("() => !window.cnnviz.app.actionRunning")
    assert page.inner_text("#phase-label").startswith("The loss")
    assert "step 0" in page.inner_text("#session-status")
    assert all(c["state"] == "done" for c in cards(page))
    page.get_by_role("button", name="Backward", exact=True).click()
    page.wait_for_function("() => !window.cnnviz.app.actionRunning")
    assert page.inner_text("#phase-label").startswith("Gradients")
    assert "step 0" in page.inner_text("#session-status")
    assert {c["view"] for c in cards(page) if c["layer"] >= 0} == {"dW"}
    page.get_by_role("button", name="Update", exact=True).click()
    page.wait_for_function("() => !window.cnnviz.app.actionRunning")
    assert "weights after" in page.inner_text("#phase-label")
    assert page.is_disabled("#btn-pause")  # nothing left to pause
    assert "step 1" in page.inner_text("#session-status")
    conv1 = page.evaluate("() => { const s = window.cnnviz.app.record.step; return [s.params_before[0].W[0][0][0][0], s.params_after[0].W[0][0][0][0], s.batch_grads[0].W[0][0][0][0], s.learning_rate]; }")
    before, after, grad, rate = conv1
    assert math.isclose(after, before - rate * grad, rel_tol=1e-4, abs_tol=1e-7)  # plain SGD
    screenshot(page, "15-update-after")
    assert problems.messages == []


STRIDED_SPEC = """{"input_shape": [1, 28, 28], "layers": [
  {"type": "conv", "filters": 3, "kernel": 4, "stride": 2, "padding": 1, "activation": "tanh"},
  {"type": "conv", "filters": 4, "kernel": [3, 2], "stride": [1, 2], "padding": [1, 0], "activation": "leaky_relu"},
  {"type": "avgpool", "size": [2, 1]},
  {"type": "flatten"},
  {"type": "dense", "units": 12, "activation": "sigmoid"},
  {"type": "dense", "units": 10, "activation": "softmax"}],
 "loss": "cross_entropy", "seed": 5}"""


def test_inspector_sums_match_the_engine_everywhere_on_a_strided_network(open_page):
    """Strides, asymmetric kernels and padding, conv after conv (full convolution with the
    rotated kernel, dilated by the stride), average pooling, tanh/leaky/sigmoid derivatives:
    the inspector's sum equals the engine's value for z, delta, dW and db in every layer."""
    page, problems = open_page()
    page.locator("#spec-details > summary").click()
    page.fill("#spec-editor", STRIDED_SPEC)
    page.get_by_role("button", name="Apply JSON").click()
    page.wait_for_function("() => document.getElementById('session-status').textContent.startsWith('custom')")
    page.wait_for_function("() => document.querySelectorAll('.layer-card').length === 7")
    page.wait_for_function("() => !window.cnnviz.app.actionRunning")
    checked = 0
    for view in ("z", "delta", "dW", "db"):
        set_view(page, view)
        for card in cards(page):
            if card["cells"] == 0 or (card["layer"] < 0 and view != "delta"):
                continue
            # The first cell, the middle of the first map and the last cell of the last map
            # (only the middle where cells are too thin to aim at an edge one).
            corners = page.evaluate("""i => { const m = window.cnnviz.app.strip.modelOf(i);
              const middle = [Math.floor(m.mapW / 2), Math.floor(m.mapH / 2)];
              if (m.cellH < 3 || m.cellW < 3) return [middle];
              if (m.kind === 'vector') { const last = m.size - 1;
                return [[0, 0], middle, [Math.floor(last / m.mapH), last % m.mapH]]; }
              const lastX = m.widthCells - 1 - (m.cols - 1 - (m.count - 1) % m.cols) * (m.mapW + 1);
              return [[0, 0], middle, [lastX, m.heightCells - 1]]; }""", card["layer"])
            for x, y in {tuple(corner) for corner in corners}:
                page.evaluate("() => document.getElementById('inspector').hidden = true")
                click_cell(page, card["layer"], x, y)
                assert_result_matches(page)
                if page.locator("[data-role=inspector-delta]").count():
                    assert_result_matches(page, "[data-role=inspector-delta]")
                checked += 1
    assert checked >= 30
    assert all("422" in m for m in problems.messages), problems.messages


def test_mean_squared_error_output_delta_is_explained_from_a_minus_y(open_page):
    page, problems = open_page()
    page.select_option("#preset", "lenet1989")
    page.wait_for_function("() => document.getElementById('session-status').textContent.startsWith('lenet1989')")
    page.wait_for_function("() => !window.cnnviz.app.actionRunning")
    set_view(page, "delta")
    output = page.evaluate("() => window.cnnviz.app.record.trace.layers.length - 1")
    click_cell(page, output, 0, 2)
    assert "mean squared error" in page.inner_text("#inspector")
    assert_result_matches(page)  # dL/da = (a - y) / N
    assert_result_matches(page, "[data-role=inspector-delta]")  # delta = dL/da * sigmoid'(z)
    click_cell(page, 0, 3, 3)  # conv1's delta: spread back evenly by the average pool
    assert "spreads its delta evenly" in page.inner_text("#inspector")
    assert_result_matches(page)
    assert_result_matches(page, "[data-role=inspector-delta]")
    assert problems.messages == []


def test_a_session_the_server_forgot_is_rebuilt_with_a_clear_message(open_page):
    page, problems = open_page()
    set_speed(page, "live")
    page.evaluate("async () => { await fetch(`/api/sessions/${window.cnnviz.app.session.id}`, {method: 'DELETE'}); }")
    page.get_by_role("button", name="Step", exact=True).click()
    banner = page.locator("#error-banner")
    banner.wait_for(state="visible")
    assert "no longer had this session" in banner.inner_text()
    page.wait_for_function("() => !window.cnnviz.app.actionRunning")
    step_and_wait(page)
    assert "step 1" in page.inner_text("#session-status")
    assert all("404" in m for m in problems.messages), problems.messages


STRIP_GEOMETRY_JS = """() => {
  const strip = document.getElementById('strip').getBoundingClientRect();
  const inspector = document.getElementById('inspector');
  return {strip: [strip.left, strip.right], viewport: [window.innerWidth, window.innerHeight],
          inspectorLeft: inspector.hidden ? null : inspector.getBoundingClientRect().left,
          docked: getComputedStyle(inspector).position === 'fixed',
          cards: [...document.querySelectorAll('.layer-card')].map(card => {
            const box = card.querySelector('.layer-plot').getBoundingClientRect();
            return {layer: Number(card.dataset.layer), top: card.getBoundingClientRect().top,
                    plotTop: box.top, plot: [box.width, box.height]}; })};
}"""

# Page box of the outline drawn around the clicked cell (the first selection shape of a card).
SELECTION_BOX_JS = """layer => window.cnnviz.app.strip.outlineBox(layer, '#ffd400')"""


def wait_for_strip_scroll(page) -> None:
    wait_until_still(page, "() => document.getElementById('strip').scrollLeft")


def assert_selection_visible(page, layer: int) -> None:
    """The clicked cell's outline is on screen: inside the strip's box, left of the docked
    inspector, within the viewport."""
    wait_for_strip_scroll(page)
    box = page.evaluate(SELECTION_BOX_JS, layer)
    geometry = page.evaluate(STRIP_GEOMETRY_JS)
    assert box is not None, layer
    assert geometry["strip"][0] - 1 <= box["left"] and box["right"] <= geometry["strip"][1] + 1, (box, geometry["strip"])
    assert box["right"] <= geometry["inspectorLeft"], (box, geometry["inspectorLeft"])
    assert 0 <= box["top"] and box["bottom"] <= geometry["viewport"][1], box


def test_docked_inspector_keeps_the_strip_in_one_row_at_full_map_size(open_page, screenshot):
    """At 1280×800 the docked inspector leaves every layer in one row at the strip's height
    (the strip scrolls sideways), every map drawn at the size it had before, and the clicked
    cell's outline in view, also for a card that was scrolled out of sight."""
    page, problems = open_page(1280, 800)
    set_speed(page, "live")
    step_and_wait(page)
    set_view(page, "a")
    designed = {c["layer"]: c["designedSize"] for c in cards(page)}
    click_cell(page, 0, 12, 9)  # conv1
    geometry = page.evaluate(STRIP_GEOMETRY_JS)
    assert geometry["docked"]
    assert geometry["strip"][1] <= geometry["inspectorLeft"]
    tops = [card["top"] for card in geometry["cards"]]
    assert max(tops) - min(tops) <= 1, tops  # one row: nothing wrapped below
    for card in geometry["cards"]:
        assert 0 <= card["plotTop"] <= geometry["viewport"][1] - 200, card  # the maps start well on screen
        assert card["plot"][0] >= 20 and card["plot"][1] >= 50, card
    shown = cards(page)
    assert_heatmaps_keep_their_cell_size(shown)
    assert {c["layer"]: c["designedSize"] for c in shown} == designed  # same tiling and cell size as undocked
    conv1 = page.evaluate("() => window.cnnviz.app.strip.modelOf(0)")
    assert conv1["cols"] >= 2 and conv1["cellW"] >= 2
    assert_selection_visible(page, 0)
    screenshot(page, "16-docked-inspector-conv1")

    last = page.evaluate("() => window.cnnviz.app.record.trace.layers.length - 1")
    page.evaluate("() => { document.getElementById('strip').scrollLeft = 0; }")
    wait_for_strip_scroll(page)
    page.evaluate("i => window.cnnviz.app.inspect(i, 'a', window.cnnviz.app.strip.modelOf(i) && {k: 3, value: 0})", last)
    assert_selection_visible(page, last)  # the strip scrolled the clicked card into view
    page.keyboard.press("Escape")
    page.wait_for_selector("#inspector", state="hidden")
    tops = [card["top"] for card in page.evaluate(STRIP_GEOMETRY_JS)["cards"]]
    assert max(tops) - min(tops) > 1  # closed: the strip wraps again to use the width
    assert problems.messages == []


def test_dense_and_flatten_units_have_rows_tall_enough_to_click(open_page, screenshot):
    page, problems = open_page(1280, 800)
    set_speed(page, "live")
    step_and_wait(page)
    set_view(page, "a")
    vectors = [c for c in cards(page) if c["type"] in ("flatten", "dense")]
    assert len(vectors) == 4
    for card in vectors:
        model = page.evaluate("i => window.cnnviz.app.strip.modelOf(i)", card["layer"])
        assert model["cellH"] >= 8, (card["layer"], model["cellH"])
        assert model["plotHeight"] <= 300  # long vectors wrap into columns, not downwards
        assert card["plotSize"][1] >= 8 * model["mapH"] - 1.5
    flatten = next(c["layer"] for c in vectors if c["type"] == "flatten")
    model = page.evaluate("i => window.cnnviz.app.strip.modelOf(i)", flatten)
    assert model["size"] == 400 and model["mapW"] > 1
    unit = 237
    x, y = unit // model["mapH"], unit % model["mapH"]
    value = click_cell(page, flatten, x, y)
    assert f"[{unit}]" in page.inner_text("[data-role=inspector-title]")
    engine = page.evaluate("([i, k]) => window.cnnviz.app.record.trace.layers[i].a[k]", [flatten, unit])
    assert math.isclose(value, engine, rel_tol=1e-6, abs_tol=1e-7)
    assert_result_matches(page)
    dense = vectors[1]["layer"]  # dense1, 120 units
    click_cell(page, dense, 1, 5)
    dense_model = page.evaluate("i => window.cnnviz.app.strip.modelOf(i)", dense)
    assert f"[{dense_model['mapH'] + 5}]" in page.inner_text("[data-role=inspector-title]")
    assert_result_matches(page)
    screenshot(page, "17-dense-units-clickable")
    assert problems.messages == []


def test_softmax_inspector_shows_the_exponentials_their_sum_and_the_quotient(open_page, screenshot):
    page, problems = open_page(1280, 800)
    set_speed(page, "live")
    step_and_wait(page)
    set_view(page, "a")
    output = page.evaluate("() => window.cnnviz.app.record.trace.layers.length - 1")
    k = 4
    click_cell(page, output, 0, k)
    z, a = page.evaluate("i => [window.cnnviz.app.record.trace.layers[i].z, window.cnnviz.app.record.trace.layers[i].a]", output)
    top = max(z)
    exps = [math.exp(v - top) for v in z]
    total = sum(exps)
    shown_exps = [float(v) for v in page.eval_on_selector_all("[data-role=softmax-table] tbody tr", "rows => rows.map(r => r.dataset.exp)")]
    assert len(shown_exps) == len(z)
    for shown, expected in zip(shown_exps, exps):
        assert math.isclose(shown, expected, rel_tol=1e-9)
    shown_sum = float(page.get_attribute("[data-role=softmax-sum]", "data-sum"))
    assert math.isclose(shown_sum, total, rel_tol=1e-9)
    assert "Σ exp" in page.inner_text("[data-role=softmax-sum]")
    computed, engine = assert_result_matches(page, "[data-role=inspector-softmax]")
    assert math.isclose(computed, exps[k] / total, rel_tol=1e-9)
    assert math.isclose(engine, a[k], rel_tol=1e-9)
    assert math.isclose(sum(a), 1.0, rel_tol=1e-5)
    screenshot(page, "18-softmax-inspector")
    assert problems.messages == []


def test_adam_update_view_shows_the_actual_change_of_a_weight(open_page, screenshot):
    """With Adam the inspector's update story (before, −lr·gradient, actual update, after)
    has after − before equal to the engine's params_after − params_before, and it differs
    from −lr·gradient."""
    page, problems = open_page(1280, 800)
    set_speed(page, "live")
    page.select_option("#optimizer", "adam")
    step_and_wait(page)
    assert page.evaluate("() => window.cnnviz.app.record.step.optimizer") == "adam"
    page.wait_for_function("() => document.querySelector('.layer-card[data-layer=\"0\"]').dataset.view === 'W-after'")
    f, c, r, s = 2, 0, 1, 3
    click_cell(page, 0, s, f * 6 + r, with_result=False)  # conv1's kernels: one 5×5 tile per filter, gutters of one cell
    assert f"[{f},{c},{r},{s}]" in page.inner_text("[data-role=inspector-title]")
    values = dict(zip(page.eval_on_selector_all("#inspector .inspector-values dt", "ds => ds.map(d => d.textContent)"),
                      (float(v) for v in page.eval_on_selector_all("#inspector .inspector-values dd", "ds => ds.map(d => d.dataset.value)"))))
    before = values["before the update"]
    after = values["after the update"]
    actual = next(v for label, v in values.items() if label.startswith("actual update"))
    naive = next(v for label, v in values.items() if label.startswith("−lr·gradient"))
    engine_before, engine_after = page.evaluate("""([f, c, r, s]) => { const step = window.cnnviz.app.record.step;
      return [step.params_before[0].W[f][c][r][s], step.params_after[0].W[f][c][r][s]]; }""", [f, c, r, s])
    assert before == engine_before and after == engine_after
    assert math.isclose(after - before, engine_after - engine_before, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(actual, engine_after - engine_before, rel_tol=1e-9, abs_tol=1e-12)
    assert actual != 0
    assert not math.isclose(actual, naive, rel_tol=1e-3)  # Adam's step is not −lr·gradient
    assert "adam" in page.inner_text("#inspector")
    screenshot(page, "19-adam-update-inspector")
    assert problems.messages == []
