"""How fast the page draws, in headless Chromium against a real uvicorn server.

For LeNet-5 at 1280x800, it measures:
- step render: from pressing `Step` (speed "instant", every card showing activations) to every
  layer's heatmap drawn (the page marks `cnnviz:step-rendered` once Plotly has drawn them all),
  split into the API's share (request, transfer, JSON parse) and the page's own drawing;
- reference, in the same run and the same browser: the step request alone (fetch + JSON parse of
  the same answer), so the drawing time is also reported as a ratio to it;
- animation: frames per second (requestAnimationFrame count) while `Play` trains step after step
  with the animation at "normal" speed, next to the frame rate of the idle page.

Targets: drawing under 300 ms; at least 30 frames per second while playing.

    python3 bench/page_render.py            # 7 steps, 8 s of animation
    python3 bench/page_render.py --steps 11 --seconds 15
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright
from serving import Server  # bench/ is on sys.path as the script's folder

ROOT = Path(__file__).resolve().parents[1]


def browser_fixtures():
    """The test suite's Chromium settings (tests/browser/conftest.py)."""
    spec = importlib.util.spec_from_file_location("browser_conftest", ROOT / "tests" / "browser" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


API_STEP_JS = """async ([id, n]) => {
  const times = [];
  for (let k = 0; k < n; k++) {
    const started = performance.now();
    const response = await fetch(`/api/sessions/${id}/step`, {method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({batch_size: 32, learning_rate: 0.05, optimizer: 'sgd',
                            input: {dataset: 'mnist', split: 'test', index: k}})});
    await response.json();
    times.push(performance.now() - started);
  }
  return times;
}"""

FRAMES_JS = """async (seconds) => {
  let frames = 0, longest = 0, last = performance.now();
  const started = last;
  await new Promise((resolve) => {
    const tick = (now) => {
      frames += 1;
      longest = Math.max(longest, now - last);
      last = now;
      if (now - started < seconds * 1000) requestAnimationFrame(tick); else resolve();
    };
    requestAnimationFrame(tick);
  });
  return {fps: frames / ((performance.now() - started) / 1000), longestFrameMs: longest};
}"""


def set_range(page, selector: str, value: int) -> None:
    page.eval_on_selector(selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", str(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=7, help="steps timed for the render (median)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of animation to count frames")
    args = parser.parse_args()
    fixtures = browser_fixtures()
    with tempfile.TemporaryDirectory(prefix="cnnviz-bench-") as data_dir:
        with Server(Path(data_dir)) as server:
            base = server.url
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=fixtures.CHROMIUM, args=fixtures.CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.set_default_timeout(120_000)
                page.goto(base + "/")
                page.wait_for_function("() => window.cnnviz && window.cnnviz.ready")
                run(page, args)
                browser.close()


def run(page, args) -> None:
    set_range(page, "#speed", 0)  # instant: one render of the final state per step
    page.locator('#view-options label:has(input[value="a"])').click()
    page.wait_for_function("() => window.cnnviz.renders > 0")
    for k in range(args.steps + 1):  # the first step warms up caches and Plotly's first draws
        count = page.evaluate("() => window.cnnviz.stepTimings.length")
        page.get_by_role("button", name="Step", exact=True).click()
        page.wait_for_function("n => window.cnnviz.stepTimings.length > n && !document.getElementById('btn-step').disabled", arg=count)
    timings = page.evaluate("() => window.cnnviz.stepTimings")[1:]
    drawn = page.evaluate("() => [...document.querySelectorAll('.layer-plot')].filter(p => p.data && p.data[0].z.length > 0).length")
    session = page.evaluate("() => window.cnnviz.app.session.id")
    api_alone = page.evaluate(API_STEP_JS, [session, args.steps])

    render = statistics.median(t["render"] for t in timings)
    total = statistics.median(t["total"] for t in timings)
    api_in_step = statistics.median(t["api"] for t in timings)
    reference = statistics.median(api_alone)
    print(f"LeNet-5, 1280x800, {len(timings)} steps (median), {drawn} layer heatmaps drawn per step")
    print(f"  Step pressed -> every heatmap drawn : {total:7.1f} ms")
    print(f"    of which the API answer + parse   : {api_in_step:7.1f} ms")
    print(f"    of which the page's drawing       : {render:7.1f} ms   (target < 300 ms: {'met' if render < 300 else 'MISSED'})")
    print(f"  reference: step request alone      : {reference:7.1f} ms   (fetch + JSON parse, same browser)")
    print(f"  ratio drawing / API step alone      : {render / reference:7.2f}")
    print(f"  ratio (Step -> drawn) / API alone   : {total / reference:7.2f}")

    idle = page.evaluate(FRAMES_JS, min(args.seconds, 3.0))
    set_range(page, "#speed", 2)  # normal: one phase every 350 ms
    page.locator('#view-options label:has(input[value="auto"])').click()
    phases_before = page.evaluate("() => window.cnnviz.phaseRenders")
    page.get_by_role("button", name="Play", exact=True).click()
    playing = page.evaluate(FRAMES_JS, args.seconds)
    phases = page.evaluate("() => window.cnnviz.phaseRenders") - phases_before
    page.get_by_role("button", name="Pause", exact=True).click()
    print(f"Animation while Play trains ({args.seconds:.0f} s, speed normal, {phases} phases shown):")
    print(f"  frames per second while playing     : {playing['fps']:7.1f}      (target >= 30: {'met' if playing['fps'] >= 30 else 'MISSED'})")
    print(f"  longest frame while playing         : {playing['longestFrameMs']:7.1f} ms")
    print(f"  reference: idle page frame rate     : {idle['fps']:7.1f}")
    print(f"  ratio playing / idle frame rate     : {playing['fps'] / idle['fps']:7.2f}")


if __name__ == "__main__":
    main()
