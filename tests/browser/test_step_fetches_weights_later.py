"""A Step asks the server for its maps only, draws them, and fetches the same step's weights and
gradients right after (GET /api/sessions/{id}/steps/{step}); what needs them waits, saying so,
and says in words when they are gone."""

from __future__ import annotations

import pytest

from driving import click_cell, set_speed, set_view, step_and_wait

pytestmark = pytest.mark.browser

# Holds the page's requests for a kept step until window.__releaseKept() (the page calls the
# global fetch at request time, so this stands between the page and the server).
HOLD_KEPT_JS = """() => {
  const original = window.fetch;
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  window.__releaseKept = release;
  window.__keptRequests = [];
  window.fetch = async (url, options) => {
    if (/\\/steps\\/\\d+/.test(String(url))) { window.__keptRequests.push(String(url)); await held; }
    return original(url, options);
  };
}"""

REQUESTS_JS = """() => performance.getEntriesByType('resource').map(e => e.name.replace(location.origin, ''))
  .filter(name => /\\/api\\/sessions\\/[^/]+\\/(step|steps\\/\\d+)\\?/.test(name))"""


def test_step_asks_for_the_maps_and_fetches_weights_and_gradients_after(open_page):
    page, problems = open_page()
    set_speed(page, "live")
    set_view(page, "a")
    step_and_wait(page)
    page.wait_for_function("() => window.cnnviz.app.record.later.state === 'ready'")
    step_url, kept_url = page.evaluate(REQUESTS_JS)[-2:]
    assert step_url.endswith("/step?format=safetensors&fields=z,a,delta,grad_a,argmax")
    assert kept_url.endswith("/steps/1?format=safetensors&fields=grads,params")
    record = page.evaluate("""() => { const r = window.cnnviz.app.record;
      return {fields: [...r.fields].sort(), tensors: [...r.answer.tensors.keys()]}; }""")
    assert record["fields"] == sorted(["z", "a", "delta", "grad_a", "argmax", "grads", "params"])
    assert {"trace.layers.0.z", "trace.layers.0.params.W", "params_after.7.b",
            "batch_grads.0.W"} <= set(record["tensors"])
    # The update on screen adds up: W' - W is the change the Update phase draws.
    page.locator('#view-options label:has(input[value="auto"])').click()
    page.eval_on_selector("#timeline", "(el) => { el.value = String(Number(el.max) - 1); el.dispatchEvent(new Event('input')); }")
    page.wait_for_function("() => [...document.querySelectorAll('.layer-card[data-layer=\"0\"]')].every(c => c.dataset.view === 'W-change')")
    change = page.evaluate("""() => { const s = window.cnnviz.app.record.step;
      return [s.params_after[0].W[0][0][1][2], s.params_before[0].W[0][0][1][2]]; }""")
    shown = page.evaluate("() => window.cnnviz.app.strip.cellPoint(0, 2, 1).value")
    assert shown == pytest.approx(change[0] - change[1], rel=1e-6, abs=1e-9)
    # A view that shows weights makes the next Step ask for them at once.
    set_view(page, "dW")
    step_and_wait(page)
    assert page.evaluate(REQUESTS_JS)[-1].endswith("/step?format=safetensors")
    assert page.evaluate("() => window.cnnviz.app.record.later") is None
    assert problems.messages == []


def test_phases_and_inspector_wait_for_the_weights_and_gradients_saying_so(open_page):
    page, problems = open_page()
    set_speed(page, "live")
    set_view(page, "a")
    page.evaluate(HOLD_KEPT_JS)
    step_and_wait(page)  # the maps need nothing more: drawn while the rest is held
    assert page.evaluate("() => window.cnnviz.app.record.later.state") == "loading"
    # The inspector waits for them ...
    click_cell(page, 0, 5, 5, with_result=False)
    assert "Loading the weights and gradients" in page.inner_text("#inspector")
    # ... and so does a view that shows them, saying so (the cards keep their last drawing).
    page.locator('#view-options label:has(input[value="dW"])').click()
    page.wait_for_function("() => document.getElementById('phase-label').textContent.includes('loading the weights and gradients')")
    page.evaluate("() => window.__releaseKept()")
    page.wait_for_function("() => [...document.querySelectorAll('.layer-card')].every(c => c.dataset.view === 'dW' || c.dataset.layer === '-1')")
    page.wait_for_selector("#inspector:not([hidden]) [data-role=inspector-result]")  # explained once they came
    x, y = 3, 2
    batch = page.evaluate("() => window.cnnviz.app.record.step.batch_grads[0].W[0][0][2][3]")
    assert page.evaluate("([x, y]) => window.cnnviz.app.strip.cellPoint(0, x, y).value", [x, y]) == batch
    assert "loading" not in page.inner_text("#phase-label")
    assert problems.messages == []


def test_weights_and_gradients_that_are_gone_are_said_so_and_step_brings_new_ones(open_page):
    page, problems = open_page()
    set_speed(page, "live")
    set_view(page, "a")
    page.evaluate(HOLD_KEPT_JS)
    step_and_wait(page)
    # Another tab takes a step on the same session meanwhile: the server keeps only that one's.
    status = page.evaluate("""async () => { const app = window.cnnviz.app;
      const response = await fetch(`/api/sessions/${app.session.id}/step`, {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({batch_size: 2})});
      return response.status; }""")
    assert status == 200
    page.evaluate("() => window.__releaseKept()")
    page.wait_for_function("() => window.cnnviz.app.record.later.state === 'gone'")
    page.locator('#view-options label:has(input[value="dW"])').click()
    page.wait_for_function("() => document.getElementById('phase-label').textContent.includes('no longer available')")
    label = page.inner_text("#phase-label")
    assert "weights and gradients of step 1 are no longer available" in label and "Press Step again" in label
    notes = page.eval_on_selector_all(".layer-card[data-empty=true] .layer-note", "ns => ns.map(n => n.textContent)")
    assert notes and any("no longer available" in note for note in notes)
    assert page.locator("#error-banner").is_hidden()  # no error: a plain statement and a way on
    assert page.evaluate("() => window.cnnviz.errors") == []
    # Step again: a new step with everything.
    page.evaluate("() => window.__releaseKept()")
    step_and_wait(page)
    page.wait_for_function("() => window.cnnviz.app.record.later === null || window.cnnviz.app.record.later.state === 'ready'")
    # After a miss the kept copy is not relied on again (another server process may have taken
    # the step): this step brought its weights and gradients with its maps.
    fields = page.evaluate("() => window.cnnviz.lastStepRequest.fields")
    assert "grads" in fields and "params" in fields
    page.wait_for_function("() => [...document.querySelectorAll('.layer-card[data-layer=\"0\"]')].every(c => c.dataset.empty === 'false')")
    # The browser logs the 409 of the held request as a failed load; nothing else went wrong.
    assert [m for m in problems.messages if "409" not in m] == []
