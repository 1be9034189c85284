"""The page reads binary answers, shows the gradient the update applied (the mini-batch mean)
with the sample's own one toggle away, lists the batch, and trains live until paused."""

from __future__ import annotations

import math

import pytest

from driving import set_speed, set_view, step_and_wait, click_cell, read_number

pytestmark = pytest.mark.browser

# The value drawn in a card's cell (x, y) and the card's gradient tag.
SHOWN_JS = """([layer, x, y]) => ({point: window.cnnviz.app.strip.cellPoint(layer, x, y),
  tag: document.querySelector(`.layer-card[data-layer="${layer}"] .layer-view`).textContent,
  gradient: document.querySelector(`.layer-card[data-layer="${layer}"]`).dataset.gradient})"""


def test_binary_answers_decode_to_the_same_arrays_as_json(open_page):
    """The page's safetensors reader gives, tensor for tensor, the numbers of the JSON answer
    of the same trace (float32 views on the answer's bytes); a tensor at an offset a typed array
    refuses is copied and still read right."""
    page, problems = open_page()
    result = page.evaluate("""async () => {
      const { readAnswer, decodeSafetensors } = await import('/static/js/server/tensors.js');
      const id = window.cnnviz.app.session.id;
      const body = JSON.stringify({input: {dataset: 'mnist', split: 'test', index: 3}});
      const post = (query) => fetch(`/api/sessions/${id}/trace${query}`, {method: 'POST', headers: {'Content-Type': 'application/json'}, body});
      const binaryResponse = await post('?format=safetensors');
      const type = binaryResponse.headers.get('Content-Type');
      const binary = await readAnswer(binaryResponse, false);
      const json = await readAnswer(await post(''), false);
      const names = [...binary.tensors.keys()];
      let compared = 0, worst = 0, views = 0;
      for (const name of names) {
        const a = binary.tensor(name), b = json.tensor(name);
        if (JSON.stringify(a.shape) !== JSON.stringify(b.shape)) return {error: `${name}: shape ${a.shape} vs ${b.shape}`};
        for (let k = 0; k < a.data.length; k++) worst = Math.max(worst, Math.abs(a.data[k] - Math.fround(b.data[k])));  // JSON prints float32 shortest
        compared += a.data.length;
        if (a.data.buffer.byteLength > a.data.byteLength) views += 1;
      }
      // Lazy nested arrays for the inspector: the same numbers where the JSON has them.
      const row = binary.trace.layers[0].z[0][5];
      const nestedSame = Array.isArray(row) && row.length === 28 && row.every((v, k) => v === Math.fround(json.trace.layers[0].z[0][5][k]));
      // A hand-made file whose float32 tensor starts at an odd byte.
      const header = JSON.stringify({w: {dtype: 'F32', shape: [2, 2], data_offsets: [1, 17]}, __metadata__: {json: '{}'}});
      const bytes = new Uint8Array(8 + header.length + 17);
      new DataView(bytes.buffer).setBigUint64(0, BigInt(header.length), true);
      bytes.set(new TextEncoder().encode(header), 8);
      const values = new Float32Array([1.5, -2.25, 3.125, 1e-3]);
      bytes.set(new Uint8Array(values.buffer), 8 + header.length + 1);
      const odd = decodeSafetensors(bytes.buffer).tensors.get('w');
      return {type, names, compared, worst, views, nestedSame, odd: Array.from(odd.data), oddShape: odd.shape};
    }""")
    assert "error" not in result, result
    assert result["type"] == "application/octet-stream"
    assert {"input", "input_grad", "layers.0.z", "layers.0.params.W", "layers.1.argmax", "layers.7.grads.b"} <= set(result["names"])
    assert result["compared"] > 100_000 and result["worst"] == 0
    assert result["views"] > 0  # no copies: views on the answer's one buffer
    assert result["nestedSame"]
    assert result["odd"] == [1.5, -2.25, 3.125, pytest.approx(1e-3)] and result["oddShape"] == [2, 2]
    assert problems.messages == []


def test_shown_gradient_is_the_batch_mean_and_the_toggle_shows_the_samples_own(open_page, screenshot):
    page, problems = open_page()
    set_speed(page, "live")
    step_and_wait(page)
    set_view(page, "dW")
    x, y = 3, 2  # conv1's kernels: filter 0, channel 0, row 2, column 3
    shown = page.evaluate(SHOWN_JS, [0, x, y])
    batch, own = page.evaluate("""() => { const s = window.cnnviz.app.record.step;
      return [s.batch_grads[0].W[0][0][2][3], s.trace.layers[0].grads.W[0][0][2][3]]; }""")
    assert shown["gradient"] == "batch" and "batch mean" in shown["tag"]
    assert shown["point"]["value"] == batch
    assert not math.isclose(batch, own, rel_tol=1e-3)  # the mean over 32 digits is not this one's
    # The inspector puts the applied mean beside this image's own sum.
    click_cell(page, 0, x, y)
    applied = page.locator("#inspector [data-role=batch-gradient]")
    assert float(applied.get_attribute("data-value")) == batch
    assert "mini-batch mean" in applied.inner_text() and "over 32 samples" in applied.inner_text()
    screenshot(page, "20-dW-batch-mean-inspector")
    page.keyboard.press("Escape")
    # One labelled toggle away: this image's own gradient.
    before = page.evaluate("window.cnnviz.renders")
    page.get_by_label("dW, db: this image only").check()
    page.wait_for_function("n => window.cnnviz.renders > n", arg=before)
    shown = page.evaluate(SHOWN_JS, [0, x, y])
    assert shown["gradient"] == "sample" and "this image" in shown["tag"]
    assert shown["point"]["value"] == own
    set_view(page, "db")
    bias_own = page.evaluate("() => window.cnnviz.app.record.step.trace.layers[7].grads.b[4]")
    assert page.evaluate(SHOWN_JS, [7, 0, 4])["point"]["value"] == bias_own
    page.get_by_label("dW, db: this image only").uncheck()
    page.wait_for_function("() => document.querySelector('.layer-card[data-layer=\"7\"]').dataset.gradient === 'batch'")
    bias_mean = page.evaluate("() => window.cnnviz.app.record.step.batch_grads[7].b[4]")
    assert page.evaluate(SHOWN_JS, [7, 0, 4])["point"]["value"] == bias_mean
    # The timeline's Gradients phase says which gradient it shows.
    page.locator('#view-options label:has(input[value="auto"])').click()
    page.eval_on_selector("#timeline", "(el) => { el.value = String(Number(el.max) - 3); el.dispatchEvent(new Event('input')); }")
    page.wait_for_function("() => document.getElementById('phase-label').textContent.startsWith('Gradients')")
    assert "averaged over the mini-batch of 32" in page.inner_text("#phase-label")
    assert problems.messages == []


def test_batch_strip_lists_the_batch_with_the_given_input_first(open_page, screenshot):
    page, problems = open_page()
    set_speed(page, "live")
    step_and_wait(page)
    page.wait_for_selector("#batch-strip:not([hidden]) .batch-item")
    batch = page.evaluate("() => window.cnnviz.app.record.step.batch")
    assert len(batch["indices"]) == 32 and batch["indices"][0] is None  # the page's chosen digit is sample 0
    items = page.eval_on_selector_all("#batch-strip .batch-item", """items => items.map(i => ({index: i.dataset.index ?? null,
      traced: i.dataset.traced === 'true', text: i.querySelector('figcaption').textContent, title: i.title}))""")
    assert len(items) == 32
    assert items[0]["traced"] and "given input" in items[0]["title"] and not any(i["traced"] for i in items[1:])
    for item, index, label, predicted in zip(items, batch["indices"], batch["labels"], batch["predicted"]):
        assert item["index"] == (None if index is None else str(index))
        assert item["text"].startswith(f"{label}→{predicted}")
    assert batch["labels"][0] == page.evaluate("() => window.cnnviz.app.record.trace.label")
    assert math.isclose(sum(batch["losses"]) / 32, page.evaluate("() => window.cnnviz.app.record.step.loss"), rel_tol=1e-4)
    # Thumbnails of the other digits arrive from the MNIST listing.
    page.wait_for_function("""() => { const c = document.querySelector('#batch-strip .batch-item[data-sample="5"] canvas');
      const d = c.getContext('2d').getImageData(0, 0, 28, 28).data; return d.some((v, k) => k % 4 === 0 && v > 100); }""")
    screenshot(page, "21-batch-strip")
    assert problems.messages == []


def test_live_training_draws_every_step_with_only_the_shown_fields_and_pauses(open_page, screenshot):
    page, problems = open_page()
    set_speed(page, "live")  # the fastest speed: "live"
    assert page.inner_text("#speed-label") == "live"
    set_view(page, "a")
    start = page.evaluate("() => window.cnnviz.stepTimings.length")
    page.get_by_role("button", name="Play", exact=True).click()
    page.wait_for_function("n => window.cnnviz.stepTimings.length >= n + 4", arg=start, timeout=60_000)
    assert page.evaluate("() => window.cnnviz.lastStepRequest.fields") == ["a", "argmax"]
    page.get_by_role("button", name="Pause", exact=True).click()
    page.wait_for_function("() => !document.getElementById('btn-play').disabled")  # at once
    page.wait_for_function("() => !window.cnnviz.app.actionRunning")  # the step in flight has landed
    step = page.evaluate("() => window.cnnviz.app.session.step")
    drawn = page.evaluate("() => window.cnnviz.stepTimings.length")
    assert drawn - start == step  # every step of the run was drawn
    assert f"step {step}" in page.inner_text("#session-status")
    assert page.evaluate("() => window.cnnviz.app.record.step.step") == step  # the last step is the one shown
    page.wait_for_timeout(1200)
    assert page.evaluate("() => [window.cnnviz.app.session.step, window.cnnviz.stepTimings.length]") == [step, drawn]
    assert page.evaluate("document.getElementById('curves-plot').data[0].y.length") == step
    # A live step carries only the activations: the inspector says so instead of a wrong story.
    click_cell(page, 0, 3, 3, with_result=False)
    assert "Live training fetched only what the view shows" in page.inner_text("#inspector")
    screenshot(page, "22-live-paused")
    assert problems.messages == []


# What the charts hold: the curves' steps and x range, the prediction's bars and their labels,
# how each chart was last drawn (live or not), and the batch strip's summary.
CHARTS_JS = """() => {
  const curves = document.getElementById('curves-plot'), prediction = document.getElementById('prediction-plot');
  return {steps: curves.data[0].x.slice(-1)[0], points: curves.data[0].x.length, xRange: curves.layout.xaxis.range,
    xAuto: curves.layout.xaxis.autorange, mode: curves.data[0].mode, curvesLive: curves.liveShape.live,
    bars: prediction.data[0].y, barText: prediction.data[0].text || null, tags: (prediction.layout.annotations || []).length,
    predictionLive: prediction.liveShape.live, batchSummary: document.querySelector('[data-role="batch-summary"]').textContent,
    step: window.cnnviz.app.session.step, shownProbabilities: window.cnnviz.app.record.trace.prediction};
}"""


def test_live_training_moves_the_charts_and_pause_draws_them_whole(open_page):
    """While live training plays, the curves, the prediction and the batch strip follow the
    training (the curves' axes run ahead of the last step, bars without labels); after Pause
    every chart is drawn whole for the last step: axes fitted to the data, markers, the bars'
    values and tags, the batch strip of that step."""
    page, problems = open_page()
    set_speed(page, "live")
    step_and_wait(page)
    page.get_by_role("button", name="Play", exact=True).click()
    page.wait_for_function("() => document.getElementById('curves-plot').liveShape.live && document.getElementById('curves-plot').data[0].x.length >= 12", timeout=60_000)
    playing = page.evaluate(CHARTS_JS)
    assert playing["curvesLive"] and playing["predictionLive"] and playing["xAuto"] is False
    assert playing["xRange"][0] == 0 and playing["xRange"][1] >= playing["steps"] >= 12
    assert playing["mode"] == "lines" and playing["barText"] is None and playing["tags"] == 0
    # the charts keep up while playing: more steps drawn a moment later, the axes still ahead
    page.wait_for_function("n => document.getElementById('curves-plot').data[0].x.length >= n + 5", arg=playing["points"], timeout=60_000)
    later = page.evaluate(CHARTS_JS)
    assert later["xRange"][1] >= later["steps"] > playing["steps"]
    shown_step = int(later["batchSummary"].removeprefix("Step ").split(":")[0])
    assert 1 < shown_step <= later["step"]  # the batch strip follows the training too
    page.get_by_role("button", name="Pause", exact=True).click()
    page.wait_for_function("() => !window.cnnviz.app.actionRunning")
    page.wait_for_function("() => !document.getElementById('curves-plot').liveShape.live && !document.getElementById('prediction-plot').liveShape.live")
    paused = page.evaluate(CHARTS_JS)
    assert paused["steps"] == paused["points"] == paused["step"]  # every step is on the curves, the last one included
    assert paused["xAuto"] is True and paused["mode"] == ("lines+markers" if paused["points"] <= 60 else "lines")
    assert paused["barText"] is not None and paused["tags"] >= 1
    assert paused["bars"] == pytest.approx(paused["shownProbabilities"], abs=1e-6)  # the last step's prediction
    assert paused["batchSummary"].startswith(f"Step {paused['step']}:")
    assert problems.messages == []


MOVED_BARS_JS = """async () => {
  const charts = await import('/static/js/views/charts.js');
  const element = document.getElementById('prediction-plot');
  const bars = () => [...element.querySelectorAll('.bars .point path')].map(p => ({fill: getComputedStyle(p).fill, height: p.getBBox().height}));
  const wrong = {prediction: [0.1, 0.1, 0.5, 0.1, 0.1, 0.02, 0.02, 0.02, 0.02, 0.02], label: 3};
  const right = {prediction: [0.1, 0.1, 0.1, 0.5, 0.1, 0.02, 0.02, 0.02, 0.02, 0.02], label: 3};
  const first = await charts.drawPrediction(element, wrong, {live: true});  // a whole draw
  const before = bars();
  const second = await charts.drawPrediction(element, right, {live: true});  // the bars moved
  return {before, after: bars(), first: first.predicted, second: second.predicted, liveText: element.data[0].text || null};
}"""


def test_live_prediction_bars_move_and_change_colour_with_the_prediction(open_page):
    """Between whole draws the live bars are moved, not redrawn: their heights follow the new
    probabilities and, when the predicted class changes, so do their colours (the wrong
    prediction's red goes, the label's green stays)."""
    page, problems = open_page()
    result = page.evaluate(MOVED_BARS_JS)
    assert (result["first"], result["second"]) == (2, 3) and result["liveText"] is None
    fills = lambda bars: [bar["fill"] for bar in bars]
    red, green, grey = "rgb(192, 57, 43)", "rgb(27, 138, 75)", "rgb(138, 147, 166)"
    assert fills(result["before"])[2:4] == [red, green]
    assert fills(result["after"]) == [grey, grey, grey, green] + [grey] * 6
    heights = [bar["height"] for bar in result["after"]]
    assert heights[3] == pytest.approx(5 * heights[2], rel=0.05)  # 0.5 against 0.1
    assert heights[2] == pytest.approx(result["before"][3]["height"], rel=0.05)  # 0.1 before and after
    assert problems.messages == []


SALIENCY_JS = """async () => {
  const element = document.getElementById('saliency-plot');
  const image = element.querySelector('image');
  const source = image.getAttribute('href');
  const picture = new Image();
  picture.src = source;
  await picture.decode();
  const canvas = document.createElement('canvas');
  canvas.width = picture.width; canvas.height = picture.height;
  const context = canvas.getContext('2d');
  context.drawImage(picture, 0, 0);
  const trace = window.cnnviz.app.record.trace;
  const grad = trace.input_grad[0], input = trace.input[0];
  let hi = [0, 0], lo = [0, 0];
  grad.forEach((row, r) => row.forEach((v, c) => { if (v > grad[hi[0]][hi[1]]) hi = [r, c]; if (v < grad[lo[0]][lo[1]]) lo = [r, c]; }));
  const rgb = ([r, c]) => Array.from(context.getImageData(c, r, 1, 1).data.slice(0, 3));
  const flat = grad.flat().map(Math.abs);
  return {source: source.slice(0, 22), size: [picture.width, picture.height], hi, lo, hiColour: rgb(hi), loColour: rgb(lo),
    largest: Math.max(...flat), ticks: [...document.querySelectorAll('#saliency-colorbar .colorbar-ticks span')].map(s => s.textContent),
    shape: element.pictureShape};
}"""


def test_saliency_is_a_picture_of_dl_dx_over_the_input_with_its_numbers_under_the_pointer(open_page, screenshot):
    """The saliency is one picture made from the trace's dL/dx (red where it is positive, blue
    where negative) over the input, labelled by a colour bar of ±max|dL/dx|; the pixel under the
    pointer prints its x and dL/dx; the next step changes the picture without rebuilding it."""
    page, problems = open_page()
    set_speed(page, "live")
    step_and_wait(page)
    page.wait_for_function("() => document.querySelector('#saliency-plot image') && !document.getElementById('saliency-colorbar').hidden")
    shown = page.evaluate(SALIENCY_JS)
    assert shown["source"] == "data:image/bmp;base64," and shown["size"] == [28, 28] and shown["shape"] == "28x28"
    red, _, blue = shown["hiColour"]
    assert red > blue + 40  # the largest dL/dx: red
    red, _, blue = shown["loColour"]
    assert blue > red + 40  # the most negative: blue
    assert shown["ticks"][1] == "0" and shown["ticks"][0].startswith(("-", "−")) and len(shown["ticks"]) == 3
    assert float(shown["ticks"][2]) == pytest.approx(shown["largest"], rel=0.05)
    # the pointer over the largest dL/dx's pixel
    page.locator("#saliency-plot").scroll_into_view_if_needed()
    box = page.locator("#saliency-plot .main-svg").first.bounding_box()
    r, c = shown["hi"]
    page.mouse.move(box["x"] + 4 + 182 * (c + 0.5) / 28, box["y"] + 4 + 182 * (r + 0.5) / 28)
    page.wait_for_function("() => document.getElementById('saliency-readout').textContent.startsWith('x[')")
    expected = page.evaluate("([r, c]) => { const t = window.cnnviz.app.record.trace; return [t.input[0][r][c], t.input_grad[0][r][c]]; }", [r, c])
    readout = page.inner_text("#saliency-readout")
    assert readout.startswith(f"x[{r}, {c}] = ")
    assert float(read_number(readout.split("dL/dx = ")[1])) == pytest.approx(expected[1], rel=1e-3)
    screenshot(page, "23-saliency-readout")
    # the next step: a new picture in the same figure
    before = page.evaluate("() => document.querySelector('#saliency-plot image').getAttribute('href')")
    step_and_wait(page)
    page.wait_for_function("(before) => document.querySelector('#saliency-plot image').getAttribute('href') !== before", arg=before)
    assert page.evaluate("() => document.querySelectorAll('#saliency-plot image').length") == 1
    assert problems.messages == []
