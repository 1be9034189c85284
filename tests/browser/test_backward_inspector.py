"""The inspector's backward pass as pictures, in a real Chromium against the real server:
the δ window beside the rotated kernel for a maxpool1 delta cell, dW of conv1 as the shifted
input beside the delta map, the gradient check on click, and a what-if weight edit that
leaves the session alone. Every sum is read from the page's grids and compared with the
engine's value the page shows."""

from __future__ import annotations

import math

import pytest

from driving import apply_spec, assert_result_matches, click_cell, set_speed, set_view, step_and_wait

pytestmark = pytest.mark.browser

# Every grid of one picture role inside a section, as nested lists of the cells' data-value.
GRIDS_JS = """([section, role]) => [...document.querySelectorAll(`#inspector .inspector-section`)][section]
  .querySelectorAll(`table[data-role="${role}"]`).length === 0 ? [] :
  [...[...document.querySelectorAll(`#inspector .inspector-section`)][section]
  .querySelectorAll(`table[data-role="${role}"]`)].map(t => [...t.rows].map(r => [...r.cells].map(c => Number(c.dataset.value))))"""


def grids(page, role: str, section: int = 0) -> list[list[list[float]]]:
    return page.evaluate(GRIDS_JS, [section, role])


def flat(grid: list[list[float]]) -> list[float]:
    return [v for row in grid for v in row]


def engine_value(page, section: int = 0) -> float:
    result = page.locator("#inspector .inspector-section").nth(section).locator("[data-role=inspector-result]").first
    return float(result.get_attribute("data-engine"))


def inspector_width_fits(page) -> None:
    """Nothing in the inspector is wider than the inspector (grids wrap or scroll inside it)."""
    overflow = page.evaluate("""() => { const box = document.getElementById('inspector').getBoundingClientRect();
      return [...document.querySelectorAll('#inspector .bw-row, #inspector .inspector-formula')]
        .map(n => n.getBoundingClientRect().right - box.right).filter(d => d > 1); }""")
    assert overflow == [], overflow


def shoot(page, screenshot, name: str) -> None:
    """The whole page, and the inspector on its own (docked, it scrolls by itself)."""
    path = screenshot(page, name)
    page.locator("#inspector").screenshot(path=str(path.with_name(f"{name}-inspector.png")))


def test_maxpool1_delta_cell_shows_the_delta_window_and_rotated_kernel_summing_to_the_engine(open_page, screenshot):
    page, problems = open_page()
    set_speed(page, "live")
    step_and_wait(page)
    set_view(page, "delta")
    click_cell(page, 1, 6, 5)  # maxpool1's delta, map 0, row 5, column 6: from conv2's deltas
    assert "Reading 1 — gather" in page.inner_text("#inspector")
    windows = grids(page, "bw-delta-window")
    kernels = grids(page, "bw-kernel-rot")
    products = grids(page, "bw-products")
    assert len(windows) == len(kernels) == len(products) == 16  # one picture per conv2 filter
    assert all(len(w) == 5 and len(w[0]) == 5 for w in windows + kernels + products)
    total = 0.0
    for window, kernel, product in zip(windows, kernels, products):
        for d, w, p in zip(flat(window), flat(kernel), flat(product)):
            assert math.isclose(d * w, p, rel_tol=1e-6, abs_tol=1e-12)
        total += sum(flat(product))
    engine = engine_value(page)
    assert math.isclose(total, engine, rel_tol=1e-4, abs_tol=1e-7), (total, engine)
    assert_result_matches(page)
    # The kernel grid is W[f, 0] rotated 180°: its first cell is the weight W[f, 0, 4, 4].
    weight = page.evaluate("() => window.cnnviz.app.record.trace.layers[2].params.W")
    f = int(page.locator("#inspector .bw-picture .bw-caption").first.inner_text().split()[-1])
    assert kernels[0][0][0] == pytest.approx(weight[f][0][4][4], rel=1e-6)
    assert kernels[0][4][4] == pytest.approx(weight[f][0][0][0], rel=1e-6)
    # The second reading, scatter, adds up to the same engine value with its own check.
    scatter = page.locator("#inspector .inspector-section[data-reading=scatter]")
    assert "Reading 2 — scatter" in scatter.inner_text()
    assert_result_matches(page, "#inspector .inspector-section[data-reading=scatter] [data-role=inspector-result]")
    assert scatter.locator("table[data-role=bw-scatter] td.hit").count() >= 4
    # The contributing conv2 delta cells are outlined on conv2's card (one box per filter).
    marks = page.evaluate("() => window.cnnviz.app.strip.selection.filter(m => m.index === 2 && m.views.includes('delta'))")
    assert len(marks) == 1 and len(marks[0]["cells"]) == 16
    assert all(c["h"] == 5 and c["w"] == 5 for c in marks[0]["cells"])
    # The formula previews the largest non-zero terms, never a run of zeros.
    formula = page.inner_text("#inspector [data-role=inspector-formula]")
    assert "0·" not in formula.split("=")[1][:6] and "largest first" in formula
    inspector_width_fits(page)
    shoot(page, screenshot, "p9-maxpool1-delta")
    assert problems.messages == []


def test_conv1_dw_cell_shows_the_shifted_input_beside_the_delta_map_summing_to_the_engine(open_page, screenshot):
    page, problems = open_page()
    set_speed(page, "live")
    step_and_wait(page)
    set_view(page, "dW")
    click_cell(page, 0, 3, 2)  # conv1 dW[0, 0, 2, 3]
    title = page.inner_text("[data-role=inspector-title]")
    f, c, r, s = (int(v) for v in title[title.index("[") + 1:title.index("]")].split(","))
    inputs, = grids(page, "bw-dw-input")
    deltas, = grids(page, "bw-dw-delta")
    products, = grids(page, "bw-products")
    assert len(inputs) == len(deltas) == len(products) == 28 and len(inputs[0]) == 28
    trace = page.evaluate("() => { const t = window.cnnviz.app.record.trace; return {x: t.input, delta: t.layers[0].delta}; }")
    x = trace["x"][0] if len(trace["x"]) == 1 else trace["x"]
    # The input grid is the padded input shifted by (r, s): cell (i, j) is x[i + r - 2][j + s - 2].
    for i in (0, 13, 27):
        for j in (0, 14, 27):
            row, col = i + r - 2, j + s - 2
            expected = x[row][col] if 0 <= row < 28 and 0 <= col < 28 else 0.0
            assert inputs[i][j] == pytest.approx(expected, abs=1e-7)
            assert deltas[i][j] == pytest.approx(trace["delta"][f][i][j], rel=1e-6, abs=1e-12)
    for xv, d, p in zip(flat(inputs), flat(deltas), flat(products)):
        assert math.isclose(xv * d, p, rel_tol=1e-6, abs_tol=1e-12)
    total = sum(flat(products))
    engine = engine_value(page)
    assert math.isclose(total, engine, rel_tol=1e-4, abs_tol=1e-7), (total, engine)
    assert_result_matches(page)
    # After a step the update's gradient is the mini-batch mean; it is shown, and labelled.
    batch = page.locator("#inspector [data-role=batch-gradient]")
    assert "mini-batch mean" in batch.inner_text()
    batch_grads = page.evaluate("() => window.cnnviz.app.record.step.batch_grads[0].W")
    assert float(batch.get_attribute("data-value")) == pytest.approx(batch_grads[f][c][r][s], rel=1e-6)
    # The term table lists non-zero terms only, largest first, with the zeros counted.
    summary = page.inner_text("#inspector .inspector-terms summary")
    assert summary.startswith("784 terms") and "exactly 0" in summary
    shown = page.eval_on_selector_all("#inspector [data-role=terms-table] tbody tr td:last-child", "ts => ts.map(t => t.textContent)")
    assert 0 < len(shown) <= 12
    assert "0" not in shown
    inspector_width_fits(page)
    shoot(page, screenshot, "p9-conv1-dW")
    set_view(page, "db")
    click_cell(page, 0, 0, 1)
    assert_result_matches(page)
    assert sum(flat(grids(page, "bw-bias-delta")[0])) == pytest.approx(engine_value(page), rel=1e-4, abs=1e-7)
    shoot(page, screenshot, "p9-conv1-db")
    assert problems.messages == []


def test_phone_width_inspector_pictures_fit(open_page, screenshot):
    page, problems = open_page(390, 800)
    set_speed(page, "live")
    step_and_wait(page)
    set_view(page, "delta")
    click_cell(page, 1, 6, 5)
    assert len(grids(page, "bw-delta-window")) == 16
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.locator("#inspector").scroll_into_view_if_needed()
    page.locator("#inspector").screenshot(path=str(screenshot(page, "p9-phone-maxpool1-delta").with_name("p9-phone-maxpool1-delta-inspector.png")))
    set_view(page, "dW")
    click_cell(page, 0, 3, 2)
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.locator("#inspector").screenshot(path=str(screenshot(page, "p9-phone-conv1-dW").with_name("p9-phone-conv1-dW-inspector.png")))
    # The experiments fit too: a gradient check and a what-if at phone width.
    page.locator("#inspector [data-role=gradcheck-run]").click()
    page.wait_for_selector("#inspector [data-role=gradcheck-verdict]")
    page.locator("#inspector [data-role=whatif-value]").fill("2")
    page.locator("#inspector [data-role=whatif-run]").click()
    page.wait_for_selector("#inspector [data-role=whatif-table]")
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    experiments = page.locator("#inspector [data-role=experiments]")
    experiments.scroll_into_view_if_needed()
    experiments.screenshot(path=str(screenshot(page, "p9-phone-experiments").with_name("p9-phone-experiments-inspector.png")))
    set_view(page, "delta")
    click_cell(page, 5, 0, 17)
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.locator("#inspector").screenshot(path=str(screenshot(page, "p9-phone-dense-column").with_name("p9-phone-dense-column-inspector.png")))
    assert problems.messages == []


# Circular padding wider than the kernel, a true convolution with stride and an asymmetric
# kernel, both at once, then zero padding wider than the kernel.
CONV_OPTIONS_SPEC = """{"input_shape": [1, 28, 28], "layers": [
  {"type": "conv", "filters": 2, "kernel": 3, "stride": 1, "padding": 2, "padding_mode": "circular", "activation": "tanh"},
  {"type": "conv", "filters": 3, "kernel": [2, 4], "stride": 2, "padding": [1, 1], "operation": "convolution", "activation": "relu"},
  {"type": "conv", "filters": 2, "kernel": 2, "stride": 1, "padding": 3, "padding_mode": "circular", "operation": "convolution", "activation": "leaky_relu"},
  {"type": "conv", "filters": 2, "kernel": 2, "stride": 1, "padding": 3, "activation": "sigmoid"},
  {"type": "flatten"},
  {"type": "dense", "units": 10, "activation": "softmax"}],
 "loss": "cross_entropy", "seed": 1}"""


# Every cell of every map the inspector explains (z and δ of every layer, dL/dx, every dW
# and db), run through the page's own arithmetic module: each sum, and each x g'(z), must
# match the engine's value.
EVERY_CELL_JS = """async () => {
  const { explainCell } = await import('/static/js/explain/arithmetic.js');
  const record = window.cnnviz.app.record;
  const trace = record.trace;
  const shape = (a) => { const s = []; while (Array.isArray(a)) { s.push(a.length); a = a[0]; } return s; };
  let checked = 0; const wrong = [];
  const check = (what, sections) => { for (const s of sections) {
    if (s.result) { checked += 1; if (!s.result.match) wrong.push([what, s.heading, s.result.computed, s.result.engine]); }
    if (s.activation) { checked += 1; if (!s.activation.delta.match) wrong.push([what, 'times the derivative']); } } };
  for (let li = -1; li < trace.layers.length; li++) {
    const sh = shape(li === -1 ? trace.input_grad : trace.layers[li].delta);
    const conv = li >= 0 && trace.layers[li].type === 'conv';
    if (sh.length === 3) for (let m = 0; m < sh[0]; m++) for (let i = 0; i < sh[1]; i++) for (let j = 0; j < sh[2]; j++) {
      check(`${li} delta ${m},${i},${j}`, explainCell(record, li, 'delta', { map: m, i, j }));
      if (conv) check(`${li} z ${m},${i},${j}`, explainCell(record, li, 'z', { map: m, i, j }));
    }
    if (conv) { const [F, C, HH, WW] = shape(trace.layers[li].params.W);
      for (let f = 0; f < F; f++) { check(`${li} db ${f}`, explainCell(record, li, 'db', { k: f }));
        for (let c = 0; c < C; c++) for (let r = 0; r < HH; r++) for (let s = 0; s < WW; s++) check(`${li} dW`, explainCell(record, li, 'dW', { f, c, r, s })); } }
  }
  return { checked, wrong: wrong.slice(0, 5) };
}"""


def test_circular_padding_and_true_convolution_are_shown_and_sum_to_the_engine(open_page, screenshot):
    page, problems = open_page()
    apply_spec(page, CONV_OPTIONS_SPEC)
    page.wait_for_function("() => document.querySelectorAll('.layer-card').length === 7")
    every = page.evaluate(EVERY_CELL_JS)
    assert every["wrong"] == [] and every["checked"] > 15_000, every
    set_view(page, "z")
    click_cell(page, 0, 0, 0)  # conv1 (circular, pad 2): the window wraps around the corner
    assert_result_matches(page)
    assert page.locator("#inspector .patch-grid td.wrap").count() == 8  # 2 rows + 2 columns of a 3×3 wrap
    assert "circular padding" in page.inner_text("#inspector")
    shoot(page, screenshot, "p9-circular-forward")
    click_cell(page, 1, 0, 0)  # conv2, the true convolution: the kernel is shown rotated
    assert_result_matches(page)
    assert "rotated 180°" in page.inner_text("#inspector .patch-grid")
    shoot(page, screenshot, "p9-convolution-forward")
    set_view(page, "delta")
    for layer, x, y in ((1, 3, 4), (0, 0, 0), (0, 29, 29), (2, 5, 5), (-1, 0, 0)):
        click_cell(page, layer, x, y)
        for result in page.locator("#inspector [data-role=inspector-result]").all():
            assert result.get_attribute("data-match") == "true", page.inner_text("#inspector")
        if layer in (-1, 1):  # the next layer pads circularly: only the scatter reading is drawn
            assert page.locator("#inspector table[data-role=bw-delta-window]").count() == 0
            assert page.locator("#inspector [data-reading=scatter] table[data-role=bw-scatter]").count() >= 1
    click_cell(page, 0, 5, 5)  # conv1's delta, from conv2 (a true convolution with stride 2)
    windows = grids(page, "bw-delta-window")
    products = grids(page, "bw-products")
    assert len(windows) == 3 and len(windows[0]) == 2 and len(windows[0][0]) == 4
    assert sum(sum(flat(p)) for p in products) == pytest.approx(engine_value(page), rel=1e-4, abs=1e-7)
    assert "(the forward's rotation undone)" in page.inner_text("#inspector")
    shoot(page, screenshot, "p9-convolution-backward")
    set_view(page, "dW")
    click_cell(page, 0, 1, 1)
    assert_result_matches(page)
    assert page.locator("#inspector table[data-role=bw-dw-input] td.wrap").count() > 0
    assert problems.messages == []


def session_weights(page) -> dict:
    """The session's weights as the server holds them (a fresh trace, nothing changed)."""
    return page.evaluate("""async () => { const app = window.cnnviz.app;
      const r = await fetch(`/api/sessions/${app.session.id}/trace`, {method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({input: {dataset: 'mnist', split: app.inputs.current.split, index: app.inputs.current.index}})});
      const t = await r.json(); return {loss: t.loss, W: t.layers.map(l => l.params && l.params.W ? l.params.W : null)}; }""")


def test_gradient_check_on_click_shows_numeric_and_analytic(open_page, screenshot):
    page, problems = open_page()
    set_speed(page, "live")
    page.get_by_role("button", name="Forward", exact=True).click()
    page.wait_for_function("() => window.cnnviz.app.record && !window.cnnviz.app.actionRunning")
    set_view(page, "dW")
    click_cell(page, 0, 2, 2)  # conv1 dW[0, 0, 2, 2]
    engine = engine_value(page)
    page.locator("#inspector [data-role=gradcheck-run]").click()
    page.wait_for_selector("#inspector [data-role=gradcheck-verdict]")
    value = lambda role: float(page.get_attribute(f"#inspector [data-role=gc-{role}]", "data-value"))  # noqa: E731
    analytic, numeric = value("analytic"), value("numeric")
    assert analytic == pytest.approx(engine, rel=1e-5, abs=1e-8)  # the same gradient the inspector derived
    assert numeric == pytest.approx(analytic, rel=1e-3, abs=1e-6)
    assert value("abs_error") == pytest.approx(abs(analytic - numeric), rel=1e-6, abs=1e-12)
    assert value("epsilon") == pytest.approx(1e-4)
    assert page.get_attribute("#inspector [data-role=gradcheck-verdict]", "data-agree") == "true"
    shoot(page, screenshot, "p9-gradcheck-conv1-dW")
    # An input pixel, the same way.
    set_view(page, "delta")
    click_cell(page, -1, 14, 12)
    page.locator("#inspector [data-role=gradcheck-run]").click()
    page.wait_for_selector("#inspector [data-role=gradcheck-verdict]")
    assert value("analytic") == pytest.approx(engine_value(page), rel=1e-5, abs=1e-8)
    assert value("numeric") == pytest.approx(value("analytic"), rel=1e-3, abs=1e-6) or \
        page.locator("#inspector [data-role=gradcheck-kinks] li").count() > 0
    # conv1's bias starts at 0, so over the blank background z = b = 0 exactly: any nudge of
    # b[0] flips those ReLUs, the loss has a corner there and the engine says so.
    set_view(page, "db")
    click_cell(page, 0, 0, 0)
    page.locator("#inspector [data-role=gradcheck-run]").click()
    page.wait_for_selector("#inspector [data-role=gradcheck-verdict]")
    assert page.get_attribute("#inspector [data-role=gradcheck-verdict]", "data-agree") == "false"
    assert "corner" in page.inner_text("#inspector [data-role=gradcheck-verdict]")
    kinks = page.inner_text("#inspector [data-role=gradcheck-kinks]")
    assert "conv1" in kinks and "relu" in kinks
    shoot(page, screenshot, "p9-gradcheck-kink")
    assert problems.messages == []


def test_what_if_weight_edit_changes_the_loss_and_leaves_the_session_alone(open_page, screenshot):
    page, problems = open_page()
    set_speed(page, "live")
    page.get_by_role("button", name="Forward", exact=True).click()
    page.wait_for_function("() => window.cnnviz.app.record && !window.cnnviz.app.actionRunning")
    before = session_weights(page)
    set_view(page, "W")
    click_cell(page, 0, 2, 2, with_result=False)  # conv1 W[0, 0, 2, 2]
    original = before["W"][0][0][0][2][2]
    field = page.locator("#inspector [data-role=whatif-value]")
    assert float(field.input_value()) == pytest.approx(original, rel=1e-5)
    field.fill("3")
    page.locator("#inspector [data-role=whatif-run]").click()
    page.wait_for_selector("#inspector [data-role=whatif-loss]")
    loss = page.locator("#inspector [data-role=whatif-loss]")
    loss_before, loss_after = float(loss.get_attribute("data-before")), float(loss.get_attribute("data-after"))
    assert loss_before == pytest.approx(before["loss"], rel=1e-6)
    assert abs(loss_after - loss_before) > 1e-4
    # Layers after the edit moved; the input gradient too; the table says so row by row.
    changed = page.eval_on_selector_all("#inspector [data-role=whatif-table] tr[data-changed=true] td:nth-child(2)", "ts => ts.map(t => t.textContent)")
    assert {"z", "a", "δ", "dW", "W"} <= set(changed) and "loss L" in changed
    shoot(page, screenshot, "p9-whatif-table")
    page.locator("#inspector [data-role=whatif-show]").click()
    page.wait_for_selector("#whatif-banner:not([hidden])")
    page.wait_for_function("() => !window.cnnviz.app.actionRunning")
    assert "W[0,0,2,2] = 3" in page.inner_text("#whatif-banner")
    shown = page.evaluate("() => window.cnnviz.app.record.trace")
    assert shown["layers"][0]["params"]["W"][0][0][2][2] == pytest.approx(3.0)
    assert shown["loss"] == pytest.approx(loss_after, rel=1e-6)
    shoot(page, screenshot, "p9-whatif-strip")
    after = session_weights(page)
    assert after["W"] == before["W"] and after["loss"] == before["loss"]  # the session is untouched
    # While the what-if is shown, a second change adds to the first.
    click_cell(page, 0, 3, 2, with_result=False)  # conv1 W[0, 0, 2, 3]
    assert "what-if trace" in page.inner_text("#inspector [data-role=experiments]")
    page.locator("#inspector [data-role=whatif-plus]").click()
    page.locator("#inspector [data-role=whatif-run]").click()
    page.wait_for_selector("#inspector [data-role=whatif-loss]")
    both = page.inner_text("#inspector [data-role=whatif-loss]")
    assert "W[0,0,2,2] = 3" in both and "W[0,0,2,3] = " in both
    page.locator("#whatif-banner [data-role=whatif-clear-banner]").click()
    page.wait_for_selector("#whatif-banner", state="hidden")
    page.wait_for_function("l => Math.abs(window.cnnviz.app.record.trace.loss - l) < 1e-9", arg=before["loss"])
    page.wait_for_function("() => !window.cnnviz.app.actionRunning")
    # The label: the same digit traced as if it were another class.
    set_view(page, "delta")
    click_cell(page, 7, 0, 3)
    label = page.evaluate("() => window.cnnviz.app.record.trace.label")
    page.select_option("#inspector [data-role=whatif-label]", str((label + 1) % 10))
    page.locator("#inspector [data-role=whatif-run]").click()
    page.wait_for_selector("#inspector [data-role=whatif-loss]")
    assert f"label {(label + 1) % 10} instead of {label}" in page.inner_text("#inspector [data-role=whatif-loss]")
    assert session_weights(page) == before
    # A pixel drawn brighter: the input changes, the weights do not.
    set_view(page, "a")
    click_cell(page, -1, 3, 3, with_result=False)
    page.locator("#inspector [data-role=whatif-value]").fill("1")
    page.locator("#inspector [data-role=whatif-run]").click()
    page.wait_for_selector("#inspector [data-role=whatif-loss]")
    assert "1 pixel redrawn" in page.inner_text("#inspector [data-role=whatif-loss]")
    rows = page.eval_on_selector_all("#inspector [data-role=whatif-table] tr[data-changed=true] td:nth-child(2)", "ts => ts.map(t => t.textContent)")
    assert "W" not in rows and "z" in rows
    shoot(page, screenshot, "p9-whatif-pixel")
    assert session_weights(page) == before
    assert problems.messages == []


def test_worked_example_preset_reads_the_notes_numbers_off_the_screen(open_page, screenshot):
    """The notes' first worked example: X = [[1,2,3],[4,5,6],[7,8,9]], F = [[1,2],[3,4]],
    dL/dO = [[1,0],[2,-1]]: O, dL/dF and dL/dX appear in the inspector's grids, number by number."""
    page, problems = open_page()
    page.select_option("#preset", "worked")
    page.wait_for_function("() => document.getElementById('session-status').textContent.startsWith('worked')")
    page.wait_for_function("() => document.querySelectorAll('.layer-card').length === 4")
    page.wait_for_function("() => window.cnnviz.app.record && window.cnnviz.app.record.trace.input.flat(2).length === 9")
    assert "worked" in page.inner_text("#example-note")
    page.wait_for_function("() => document.getElementById('prediction-summary').textContent.includes('target y = [36, 47, 65, 78]')")
    assert "output a = [37, 47, 67, 77]" in page.inner_text("#prediction-summary")
    set_view(page, "z")
    click_cell(page, 0, 1, 0)  # O[0, 1] = 2·1 + 3·2 + 5·3 + 6·4 = 47
    assert_result_matches(page)
    assert float(page.get_attribute("#inspector [data-role=inspector-result]", "data-engine")) == 47
    shoot(page, screenshot, "p9-worked-O")
    set_view(page, "delta")
    click_cell(page, -1, 1, 1)  # dL/dX[1, 1] = 1·4 + 0·3 + 2·2 + (−1)·1 = 7
    window, = grids(page, "bw-delta-window")
    kernel, = grids(page, "bw-kernel-rot")
    products, = grids(page, "bw-products")
    assert window == [[1, 0], [2, -1]] and kernel == [[4, 3], [2, 1]] and products == [[4, 0], [4, -1]]
    assert engine_value(page) == 7
    assert_result_matches(page)
    shoot(page, screenshot, "p9-worked-dX")
    set_view(page, "dW")
    click_cell(page, 0, 0, 1)  # dL/dF[1, 0] = 4·1 + 5·0 + 7·2 + 8·(−1) = 10
    inputs, = grids(page, "bw-dw-input")
    deltas, = grids(page, "bw-dw-delta")
    assert inputs == [[4, 5], [7, 8]] and deltas == [[1, 0], [2, -1]]
    assert engine_value(page) == 10
    shoot(page, screenshot, "p9-worked-dF")
    page.get_by_role("button", name="Trace the chosen digit instead").click()
    page.wait_for_selector("#example-note", state="hidden")
    assert problems.messages == []


def test_pool_routing_and_dense_columns_are_pictures_that_sum_to_the_engine(open_page, screenshot):
    page, problems = open_page()
    set_speed(page, "live")
    step_and_wait(page)
    set_view(page, "delta")
    click_cell(page, 0, 12, 10)  # conv1's delta: routed back through maxpool1's window
    window, = grids(page, "bw-pool-window")
    routed, = grids(page, "bw-pool-routed")
    assert len(window) == 2 and len(window[0]) == 2
    assert page.locator("#inspector table[data-role=bw-pool-window] td.winner").count() == 1
    assert page.locator("#inspector table[data-role=bw-pool-routed] td.hit").count() == 1
    grad_a = float(page.get_attribute("#inspector [data-role=inspector-result]", "data-engine"))
    hit = page.evaluate("() => Number(document.querySelector('#inspector table[data-role=bw-pool-routed] td.hit').dataset.value)")
    assert hit == pytest.approx(grad_a, rel=1e-6, abs=1e-12)
    assert sum(v != 0 for v in flat(routed)) <= 1  # the window's delta goes to its winner only
    shoot(page, screenshot, "p9-maxpool-routing")
    click_cell(page, 5, 0, 17)  # dense1's delta: δ of dense2's 84 units times column 17 of W
    deltas, = grids(page, "bw-dense-delta")
    column, = grids(page, "bw-dense-column")
    products, = grids(page, "bw-products")
    assert len(flat(deltas)) == len(flat(column)) == len(flat(products)) == 84
    w = page.evaluate("() => window.cnnviz.app.record.trace.layers[6].params.W.map(row => row[17])")
    assert flat(column) == pytest.approx(w, rel=1e-6)
    assert sum(flat(products)) == pytest.approx(engine_value(page), rel=1e-4, abs=1e-7)
    # No long dumps: the table shows its largest rows and offers the rest.
    assert page.locator("#inspector [data-role=terms-table] tbody tr").count() <= 12
    more = page.locator("#inspector .terms-more")
    if more.count():
        page.locator("#inspector .inspector-terms summary").first.click()  # a long table starts folded
        more.click()
        assert page.locator("#inspector [data-role=terms-table] tbody tr").count() > 12
    shoot(page, screenshot, "p9-dense-column")
    assert problems.messages == []
