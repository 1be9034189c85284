"""Issue 10's "Build" list in a real headless Chromium against the real server: the held-out
evaluation's confusion matrix and misclassified gallery (item 18), the layer builder (16) and
shareable links (17)."""

from __future__ import annotations

import pytest
from driving import choose_preset, click_cell

pytestmark = pytest.mark.browser


def train_and_evaluate(page, steps: int = 15) -> None:
    page.fill("#train-steps", str(steps))
    page.get_by_role("button", name="Train steps").click()
    page.wait_for_function("() => /Trained/.test(document.getElementById('eval-result').textContent)")
    page.get_by_role("button", name="Evaluate", exact=True).click()
    page.wait_for_selector("#evaluation:not([hidden]) .miss-item")


GALLERY_JS = """() => [...document.querySelectorAll('#evaluation .miss-item')].map(button => {
  const canvas = button.querySelector('canvas');
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0;
  for (let k = 0; k < pixels.length; k += 4) if (pixels[k] > 40) lit += 1;
  return {index: Number(button.dataset.index), text: button.innerText, lit};
})"""


def test_evaluate_shows_the_confusion_matrix_and_the_misclassified_digits(open_page, screenshot):
    page, problems = open_page(1440, 900)
    choose_preset(page, "mlp")
    answers = []
    page.on("response", lambda r: answers.append(r) if r.url.endswith("/evaluate") else None)
    train_and_evaluate(page)
    answer = answers[-1].json()
    plot = page.evaluate("""() => { const p = document.querySelector('#evaluation [data-role="confusion-plot"]');
        const t = p.data[0]; return {type: t.type, z: t.z, text: t.text, x: t.x, y: t.y}; }""")
    assert plot["type"] == "heatmap" and plot["x"] == [str(k) for k in range(10)]
    # counts printed as the server counted them, colours the row's share
    assert plot["text"] == [[str(c) for c in row] for row in answer["confusion"]]
    for row, shares in zip(answer["confusion"], plot["z"]):
        assert shares == pytest.approx([c / sum(row) for c in row])
    gallery = page.evaluate(GALLERY_JS)
    assert [g["index"] for g in gallery] == [m["index"] for m in answer["misclassified"]]
    first = answer["misclassified"][0]
    assert f"{first['label']}→{first['predicted']}" in gallery[0]["text"]
    assert f"{round(first['probability'] * 100)}%" in gallery[0]["text"]
    page.wait_for_function("""() => [...document.querySelectorAll('#evaluation .miss-item canvas')]
        .every(c => { const d = c.getContext('2d').getImageData(0, 0, 28, 28).data;
                      for (let k = 0; k < d.length; k += 4) if (d[k] > 40) return true; return false; })""")
    summary = page.inner_text('#evaluation [data-role="evaluation-summary"]')
    assert f"{answer['misclassified_count']} misclassified" in summary
    page.locator("#evaluation").scroll_into_view_if_needed()
    screenshot(page, "evaluation-1440")

    # clicking a digit traces it: the page's input and trace become that test digit
    page.locator("#evaluation .miss-item").first.click()
    page.wait_for_function("i => { const t = window.cnnviz.app.record && window.cnnviz.app.record.trace;"
                           " return t && t.source && t.source.split === 'test' && t.source.index === i; }",
                           arg=first["index"])
    trace = page.evaluate("() => { const t = window.cnnviz.app.record.trace;"
                          " return {label: t.label, predicted: t.predicted_class}; }")
    assert trace == {"label": first["label"], "predicted": first["predicted"]}
    assert f"test #{first['index']}" in page.inner_text("#input-caption")
    assert page.get_attribute("#evaluation .miss-item >> nth=0", "aria-pressed") == "true"
    assert problems.messages == []


def test_evaluation_of_a_single_output_network_names_its_two_classes(open_page, screenshot):
    page, problems = open_page(390, 844)
    choose_preset(page, "tiny")
    train_and_evaluate(page, steps=5)
    x = page.evaluate("() => document.querySelector('#evaluation [data-role=\"confusion-plot\"]').data[0].x")
    positive = page.input_value("#positive-class")
    assert x == [f"not {positive}", positive]
    captions = page.locator("#evaluation .miss-label").all_inner_texts()
    assert captions and all(c in (f"not {positive}→{positive}", f"{positive}→not {positive}")
                            for c in captions)
    box = page.locator("#evaluation").bounding_box()
    assert box["width"] <= 390
    page.locator("#evaluation").scroll_into_view_if_needed()
    screenshot(page, "evaluation-390")
    assert problems.messages == []


# --- item 16: the layer builder ---------------------------------------------------------------

def page_errors(problems) -> list[str]:
    """Console errors other than Chromium's note of a refused request (a spec the check
    refuses answers 422 on purpose)."""
    return [m for m in problems.messages if "status of 422" not in m]


def readouts(page) -> list[str]:
    return page.locator("#builder .builder-readout").all_inner_texts()


def wait_checked(page) -> None:
    page.wait_for_function("() => !document.getElementById('builder').dataset.checking")


def test_the_layer_builder_shows_the_engines_shapes_and_errors_and_builds(open_page, screenshot):
    page, problems = open_page(1440, 900)
    wait_checked(page)
    page.wait_for_function("() => document.querySelectorAll('#builder .builder-readout:not(:empty)').length === 8")
    answer = page.evaluate("""() => fetch('/api/specs/check', {method: 'POST',
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({spec: window.cnnviz.app.session.spec})}).then(r => r.json())""")
    # every number shown is the engine's, from the check
    assert readouts(page) == [
        f"→ {'×'.join(map(str, layer['output_shape']))} · {layer['parameters']:,} param"
        + ("" if layer["parameters"] == 1 else "s") for layer in answer["layers"]]
    assert readouts(page)[0] == "→ 6×28×28 · 156 params"
    assert "61,706 params" in page.inner_text("#builder .builder-status")

    # an impossible kernel: the engine's words on the offending field, Build disabled, the
    # JSON editor showing the same spec
    page.fill('[aria-label="layer 2 kernel"]', "20")
    page.wait_for_selector('#builder .builder-layer.has-error[data-index="2"]')
    wait_checked(page)
    assert page.get_attribute('[aria-label="layer 2 kernel"]', "aria-invalid") == "true"
    assert "kernel height 20 is larger than the padded input height 14" in page.inner_text(
        '#builder .builder-layer[data-index="2"] .builder-error')
    assert page.is_disabled("#builder-apply")
    assert '"kernel": 20' in page.input_value("#spec-editor")
    screenshot(page, "builder-error-1440")
    page.fill('[aria-label="layer 2 kernel"]', "5")
    wait_checked(page)
    assert page.locator("#builder .has-error").count() == 0 and not page.is_disabled("#builder-apply")

    # softmax before the end is refused on the activation menu
    page.select_option('[aria-label="layer 5 activation"]', "softmax")
    page.wait_for_selector('#builder .builder-layer.has-error[data-index="5"]')
    assert page.get_attribute('[aria-label="layer 5 activation"]', "aria-invalid") == "true"
    page.select_option('[aria-label="layer 5 activation"]', "tanh")
    wait_checked(page)

    # reorder: the pool first, then shapes follow from the engine
    page.click('#builder .builder-layer[data-index="1"] [data-action="up"]')
    wait_checked(page)
    assert page.locator('#builder .builder-layer[data-index="0"] select').first.input_value() == "maxpool"
    assert readouts(page)[:2] == ["→ 1×14×14 · 0 params", "→ 6×14×14 · 156 params"]
    page.click('#builder .builder-layer[data-index="0"] [data-action="down"]')
    wait_checked(page)

    # remove a dense layer, add a conv with the new options
    page.click('#builder .builder-layer[data-index="6"] [data-action="remove"]')
    wait_checked(page)
    assert page.locator("#builder .builder-layer").count() == 7
    assert readouts(page)[6] == "→ 10 · 1,210 params"
    page.click('#builder .builder-layer[data-index="0"] [data-action="insert"]')
    wait_checked(page)
    page.select_option('[aria-label="layer 1 pad with"]', "circular")
    page.select_option('[aria-label="layer 1 operation"]', "convolution")
    page.fill('[aria-label="layer 1 filters"]', "3")
    wait_checked(page)
    assert readouts(page)[1] == "→ 3×28×28 · 165 params"  # 3 filters of 6x3x3 plus 3 biases
    assert readouts(page)[2:4] == ["→ 3×14×14 · 0 params", "→ 16×10×10 · 1,216 params"]

    # the JSON editor drives the builder too
    page.click("#spec-details summary")
    text = page.input_value("#spec-editor").replace('"units": 120', '"units": 100')
    page.fill("#spec-editor", text)
    wait_checked(page)
    assert page.input_value('[aria-label="layer 6 units"]') == "100"

    # Build this network: a session of exactly that spec, drawn
    page.click("#builder-apply")
    page.wait_for_function("() => window.cnnviz.app.session && window.cnnviz.app.session.preset === null"
                           " && window.cnnviz.app.record && window.cnnviz.app.record.trace.layers.length === 8")
    spec = page.evaluate("() => window.cnnviz.app.session.spec")
    conv = spec["layers"][1]
    assert conv["padding_mode"] == "circular" and conv["operation"] == "convolution"
    assert conv["filters"] == 3 and spec["layers"][6] == {"type": "dense", "units": 100, "activation": "tanh"}
    assert page.locator(".layer-card").count() == 9  # the input and eight layers
    assert page_errors(problems) == []


def test_the_layer_builder_fits_a_phone(open_page, screenshot):
    page, problems = open_page(390, 844)
    wait_checked(page)
    page.fill('[aria-label="layer 2 stride"]', "2")
    page.wait_for_selector('#builder .builder-layer.has-error[data-index="2"]')
    # the engine's "stride 2 does not divide ...; change padding, kernel or stride" is about stride
    assert page.get_attribute('[aria-label="layer 2 stride"]', "aria-invalid") == "true"
    assert page.locator('#builder [aria-invalid="true"]').count() == 1
    builder = page.locator("#builder").bounding_box()
    assert builder["x"] >= 0 and builder["x"] + builder["width"] <= 390
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390
    page.locator("#builder").scroll_into_view_if_needed()
    screenshot(page, "builder-error-390")
    assert page_errors(problems) == []


# --- item 17: shareable links -------------------------------------------------------------------

VIEW_STATE_JS = """() => { const app = window.cnnviz.app;
  return {session: app.session.id, preset: app.session.preset, spec: app.session.spec,
          input: app.inputs.current && {kind: app.inputs.current.kind, split: app.inputs.current.split,
                                        index: app.inputs.current.index, label: app.inputs.current.label},
          phase: app.phase, view: app.viewMode, inspected: app.inspected,
          title: document.querySelector('[data-role=inspector-title]').textContent,
          inspectorOpen: !document.getElementById('inspector').hidden}; }"""


def choose_digit(page, index: int) -> None:
    page.locator(f'#mnist-grid .thumb[data-index="{index}"]').click()
    page.wait_for_function("i => { const t = window.cnnviz.app.record && window.cnnviz.app.record.trace;"
                           " return t && t.source && t.source.index === i; }", arg=index)
    page.evaluate("() => window.cnnviz.app.idle()")


def open_link(browser, url: str, width: int = 1440, height: int = 900):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(30_000)
    problems = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(url)
    page.wait_for_function("() => window.cnnviz && window.cnnviz.ready")
    page.evaluate("() => window.cnnviz.app.idle()")
    return context, page, problems


SESSION_STEP_JS = "id => fetch('/api/sessions/' + id).then(r => r.ok ? r.json().then(s => s.step) : r.status)"
# The loss of training digit 5 under a session's current weights.
LOSS_OF_JS = """id => fetch('/api/sessions/' + id + '/trace', {method: 'POST', headers: {'Content-Type': 'application/json'},
  body: JSON.stringify({input: {dataset: 'mnist', split: 'train', index: 5}})}).then(r => r.json()).then(t => t.loss)"""


def test_a_link_opens_the_same_view_on_a_copy_of_the_session(open_page, browser, screenshot):
    page, problems = open_page(1440, 900)
    choose_digit(page, 5)
    page.get_by_role("button", name="Step", exact=True).click()  # a trained session: step 1
    page.wait_for_function("() => window.cnnviz.app.session.step === 1 && !window.cnnviz.app.actionRunning")
    page.evaluate("() => window.cnnviz.app.idle()")
    page.locator('#view-options label:has(input[value="z"])').click()
    page.locator("#timeline").focus()
    page.keyboard.press("Home")
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    click_cell(page, 0, 4, 7, with_result=False)
    shown = page.evaluate(VIEW_STATE_JS)
    assert shown["phase"] == 3 and shown["view"] == "z" and shown["inspectorOpen"]
    url = page.url
    assert "#" in url and f"s={shown['session']}" in url and "input=train%3A5" in url  # the default split is train
    original_loss = page.evaluate(LOSS_OF_JS, shown["session"])

    # another person (another browser profile) opens it: a copy of the session, the same view
    context, linked, errors = open_link(browser, url)
    try:
        linked.wait_for_selector("#inspector:not([hidden])")
        reopened = linked.evaluate(VIEW_STATE_JS)
        copy = reopened.pop("session")
        assert copy != shown["session"]
        assert reopened == {k: v for k, v in shown.items() if k != "session"}  # input, phase, view, cell, title
        note = linked.locator("#link-note")
        assert note.get_attribute("data-state") == "copied"
        assert "copy of the linked session" in note.inner_text() and "step 1" in note.inner_text()
        assert "train #5" in linked.inner_text("#input-caption")
        # the copy holds the same trained weights and curves
        assert linked.evaluate(LOSS_OF_JS, copy) == original_loss
        assert linked.evaluate("() => window.cnnviz.app.history.steps") == [1]
        assert f"s={copy}" in linked.url  # the hash names the copy, ready to share again
        screenshot(linked, "link-copied-1440")
        # training and rebuilding the copy leave the shared session as it was
        linked.evaluate("() => window.cnnviz.app.idle()")
        linked.get_by_role("button", name="Step", exact=True).click()
        linked.wait_for_function("() => window.cnnviz.app.session.step === 2")
        linked.evaluate("() => window.cnnviz.app.idle()")
        assert page.evaluate(SESSION_STEP_JS, shown["session"]) == 1
        linked.select_option("#preset", "tiny")
        linked.wait_for_function("() => window.cnnviz.app.session.preset === 'tiny'")
        linked.evaluate("() => window.cnnviz.app.idle()")
        assert page.evaluate(SESSION_STEP_JS, shown["session"]) == 1  # not deleted with the copy
        assert errors == []
    finally:
        context.close()
    assert problems.messages == []


def test_the_browser_that_made_a_link_reopens_its_own_session(open_page):
    page, problems = open_page(1280, 800)
    choose_digit(page, 3)
    shown = page.evaluate(VIEW_STATE_JS)
    again = page.context.new_page()  # the same browser profile: a reload, another tab
    try:
        again.goto(page.url)
        again.wait_for_function("() => window.cnnviz && window.cnnviz.ready")
        again.evaluate("() => window.cnnviz.app.idle()")
        note = again.locator("#link-note")
        note.wait_for()
        assert note.get_attribute("data-state") == "reused"
        assert again.evaluate(VIEW_STATE_JS)["session"] == shown["session"]
    finally:
        again.close()
    assert problems.messages == []


def test_a_link_whose_session_is_gone_rebuilds_the_custom_network_and_says_so(open_page, browser, screenshot):
    page, problems = open_page(390, 844)
    choose_preset(page, "mlp")
    page.fill("#seed", "7")
    page.fill('[aria-label="layer 1 units"]', "32")
    wait_checked(page)
    page.click("#builder-apply")
    page.wait_for_function("() => window.cnnviz.app.session.preset === null"
                           " && window.cnnviz.app.session.spec.layers[1].units === 32")
    page.evaluate("() => window.cnnviz.app.idle()")
    choose_digit(page, 2)
    shown = page.evaluate(VIEW_STATE_JS)
    url = page.url
    assert "spec=" in url and "seed=" in url
    page.evaluate("id => fetch('/api/sessions/' + id, {method: 'DELETE'})", shown["session"])

    context, linked, errors = open_link(browser, url, 390, 844)
    try:
        note = linked.locator("#link-note")
        note.wait_for()
        assert note.get_attribute("data-state") == "rebuilt"
        assert "no longer exists" in note.inner_text()
        reopened = linked.evaluate(VIEW_STATE_JS)
        assert reopened["session"] != shown["session"]
        assert reopened["spec"] == shown["spec"] and reopened["preset"] is None
        assert reopened["spec"]["seed"] == 7  # the Seed field's, as the builder built it
        assert reopened["input"] == shown["input"] and reopened["phase"] == shown["phase"]
        # the same seed, so the same weights: the traced loss is the same number
        losses = [p.evaluate("() => window.cnnviz.app.record.trace.loss") for p in (page, linked)]
        assert losses[0] == losses[1]
        # and the hash now names the new session, ready to share again
        assert f"s={reopened['session']}" in linked.url
        screenshot(linked, "link-rebuilt-390")
        assert errors == []
    finally:
        context.close()
    assert page_errors(problems) == []


def test_a_link_with_parts_that_cannot_be_read_opens_what_it_can(browser, server):
    context, page, errors = open_link(browser, server + "/#preset=tiny&seed=3&input=test:abc&cell=%7Bbad")
    try:
        page.locator("#link-note").wait_for()
        state = page.evaluate(VIEW_STATE_JS)
        assert state["preset"] == "tiny" and state["spec"]["seed"] == 3
        text = page.inner_text("#link-note")
        assert "input could not be read" in text and "selected cell could not be read" in text
        assert state["input"] is not None  # the first digit, as on a plain load
        assert errors == []
    finally:
        context.close()


def test_a_link_made_during_a_steps_update_shows_the_trace_and_says_why(browser, server):
    context, page, errors = open_link(browser, server + "/#preset=tiny&seed=0&input=test:4&phase=99")
    try:
        page.locator("#link-note").wait_for()
        assert "not replayed" in page.inner_text("#link-note")
        state = page.evaluate("() => ({phase: window.cnnviz.app.phase, last: window.cnnviz.app.phases.length - 1,"
                              " step: window.cnnviz.app.session.step})")
        assert state["phase"] == state["last"] and state["step"] == 0
        assert errors == []
    finally:
        context.close()
