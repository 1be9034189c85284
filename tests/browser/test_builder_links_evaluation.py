"""Issue 10's "Build" list in a real headless Chromium against the real server: the held-out
evaluation's confusion matrix and misclassified gallery (item 18), the layer builder (16) and
shareable links (17)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def choose_preset(page, name: str) -> None:
    page.select_option("#preset", name)
    page.wait_for_function("n => window.cnnviz.app.session && window.cnnviz.app.session.preset === n"
                           " && window.cnnviz.app.record", arg=name)
    page.evaluate("() => window.cnnviz.app.idle()")


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
