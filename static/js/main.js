// The page controller: holds the session, the current iteration and the timeline, wires
// the controls, and asks the drawing modules to draw. All numbers come from the API.

import { api, onBusyChange, formatDetail, ALL_FIELDS } from "./server/api.js";
import { DEFAULTS, TRAIN_CHUNK_STEPS, HIGH_LEARNING_RATE, OPTIMIZERS, SPEEDS, DEFAULT_SPEED_INDEX, VIEWS, COLORS, LIVE_CHARTS_MS, LIVE_SALIENCY_MS } from "./config.js";
import { INPUT_LAYER, gradientSource } from "./views/viewmodel.js";
import { buildPhases, layerState, phaseIndex } from "./views/phases.js";
import { Strip } from "./views/strip.js";
import { drawPrediction, drawSaliency, drawCurves, predictionSummary, saliencyCellText } from "./views/charts.js";
import { BatchStrip } from "./views/batch.js";
import { explainCell } from "./explain/arithmetic.js";
import { renderInspector } from "./explain/inspector.js";
import { attachExperiments, showWhatIfBanner, hideWhatIfBanner } from "./explain/whatif.js";
import { presetExample, showExampleNote } from "./setup/examples.js";
import { InputPanel } from "./setup/inputs.js";
import { formatSpec, locateLayer } from "./setup/specedit.js";
import { formatNumber } from "./format.js";
import { EvaluationPanel } from "./views/evaluation.js";
import { LayerBuilder } from "./setup/builder.js";
import { encodeLink, decodeLink, linkedSession, linkedInput, isOwnSession, rememberOwnSession } from "./setup/permalink.js";
import { fetchLater, needsLater, stepFields } from "./server/later.js";

const $ = (id) => document.getElementById(id);

// Exposed for the browser tests and the render benchmark: counters and timings only.
const probe = { ready: false, renders: 0, phaseRenders: 0, stepTimings: [], errors: [] };
window.cnnviz = probe;

class App {
  constructor() {
    this.session = null;
    this.presets = [];
    this.record = null; // {id, answer, trace, step, fields}
    this.recordCounter = 0;
    this.phases = [];
    this.phase = 0;
    this.viewMode = "auto";
    this.perMap = false;
    this.markWinners = false; // max-pool winners are outlined on request
    this.gradients = "batch"; // dW/db: the mini-batch mean the update applied, or "sample"
    this.speedIndex = DEFAULT_SPEED_INDEX;
    this.playing = false;
    this.animating = false;
    this.animationToken = 0;
    this.actionRunning = false;
    this.queue = Promise.resolve();
    this.history = emptyHistory();
    this.trainedTestDigits = new Set();
    this.inspected = null;
    this.chartsDrawnAt = -Infinity;
    this.saliencyDrawnAt = -Infinity;
    this.strip = new Strip($("strip"), { onCellClick: (index, view, cell) => this.inspect(index, view, cell) });
    this.batch = new BatchStrip($("batch-strip"), { onError: (error) => this.showError(error) });
    // The layer builder and the JSON editor show one spec: each edit in one is written to the other.
    this.builder = new LayerBuilder($("builder"), {
      onChange: (spec) => {
        $("spec-editor").value = formatSpec(spec);
        this.clearSpecError();
      },
      onApply: (spec) => this.exclusive(() => this.applySpec(spec)),
    });
    this.evaluation = new EvaluationPanel($("evaluation"), {
      onChoose: (input) => this.exclusive(() => this.traceChosen(input)),
      onError: (error) => this.showError(error),
    });
    this.inputs = new InputPanel({
      onInput: (input) => this.exclusive(() => this.traceInput(input)),
      onError: (error) => this.showError(error),
    });
  }

  // --- set-up --------------------------------------------------------------------------------

  async start() {
    this.wireControls();
    onBusyChange((busy, label) => {
      $("busy").hidden = !busy;
      if (busy && label) $("busy-label").textContent = `${label}…`;
      document.body.setAttribute("aria-busy", String(busy));
    });
    try {
      this.presets = await api.presets();
      for (const preset of this.presets) $("preset").append(new Option(preset.name, preset.name));
      $("preset").value = this.presets.some((p) => p.name === DEFAULTS.preset) ? DEFAULTS.preset : this.presets[0].name;
      this.describePreset();
      const link = decodeLink(location.hash);
      if (link) {
        await this.inputs.loadPage();
        await this.openLink(link);
      } else {
        await this.buildSession({ preset: $("preset").value, seed: DEFAULTS.seed });
        const items = await this.inputs.loadPage();
        if (items.length > 0) this.inputs.chooseMnist(items[0]);
      }
      await this.idle();
    } catch (error) {
      this.showError(error);
    }
    probe.ready = true;
  }

  wireControls() {
    for (const optimizer of OPTIMIZERS) $("optimizer").append(new Option(optimizer.label, optimizer.key));
    $("optimizer").value = DEFAULTS.optimizer;
    $("learning-rate").value = String(DEFAULTS.learning_rate);
    $("batch-size").value = String(DEFAULTS.batch_size);
    $("train-steps").value = String(DEFAULTS.train_steps);

    for (const id of ["learning-rate", "optimizer"]) $(id).addEventListener("input", () => this.checkLearningRate());
    $("optimizer").addEventListener("change", () => this.checkLearningRate());

    $("preset").addEventListener("change", () => {
      this.describePreset();
      this.exclusive(() => this.buildSession({ preset: $("preset").value, seed: this.seed() }));
    });
    // Build: the current architecture (a preset's or the applied JSON's) again, with the seed field's seed.
    $("build-preset").addEventListener("click", () => this.exclusive(() => this.buildSession(this.rebuildRequest(), { keepSpecText: !this.session || !this.session.preset })));
    $("apply-spec").addEventListener("click", () => this.exclusive(() => this.applySpec()));
    for (let digit = 0; digit <= 9; digit++) $("positive-class").append(new Option(String(digit), String(digit)));
    $("positive-class").addEventListener("change", () => this.exclusive(() => this.buildSession(this.rebuildRequest(), { keepSpecText: true })));
    $("format-spec").addEventListener("click", () => {
      try {
        $("spec-editor").value = formatSpec(JSON.parse($("spec-editor").value));
        this.clearSpecError();
      } catch (error) {
        this.showSpecError(`Not valid JSON: ${error.message}`);
      }
    });
    $("spec-editor").addEventListener("input", () => {
      this.clearSpecError();
      let spec = null;
      try {
        spec = JSON.parse($("spec-editor").value);
      } catch {
        return; // half-typed JSON: the builder keeps the last spec that parsed
      }
      this.builder.load(spec);
    });

    $("btn-forward").addEventListener("click", () => this.exclusive(() => this.forward()));
    $("btn-backward").addEventListener("click", () => this.exclusive(() => this.backward()));
    $("btn-update").addEventListener("click", () => this.exclusive(() => this.update()));
    $("btn-step").addEventListener("click", () => this.exclusive(() => this.stepOnce()));
    $("btn-play").addEventListener("click", () => this.play());
    $("btn-pause").addEventListener("click", () => this.pause());
    $("btn-reset").addEventListener("click", () => {
      this.pause();
      this.exclusive(() => this.reset());
    });
    $("undo-reset").addEventListener("click", () => this.exclusive(() => this.undoReset()));
    $("train").addEventListener("click", () => this.exclusive(() => this.trainSteps()));
    $("train-cancel").addEventListener("click", () => {
      if (this.trainingRun) this.trainingRun.cancelled = true;
      $("train-cancel").disabled = true;
    });
    $("evaluate").addEventListener("click", () => this.exclusive(() => this.evaluate()));
    // The saliency is a picture: the numbers under the pointer are written beneath it.
    $("saliency-plot").addEventListener("pointermove", (event) => {
      $("saliency-readout").textContent = saliencyCellText($("saliency-plot"), event) || "\u00a0";
    });
    $("saliency-plot").addEventListener("pointerleave", () => ($("saliency-readout").textContent = "\u00a0"));
    $("error-dismiss").addEventListener("click", () => ($("error-banner").hidden = true));
    $("skip-to-player").addEventListener("click", (event) => {
      event.preventDefault();
      $("btn-step").scrollIntoView({ block: "nearest" });
      $("btn-step").focus();
    });
    $("import-session").addEventListener("change", (event) => {
      const file = event.target.files && event.target.files[0];
      event.target.value = "";
      if (file) this.exclusive(() => this.importSession(file));
    });
    for (const id of ["export-session", "export-pytorch"]) {
      $(id).addEventListener("click", () => this.nameExports());
    }
    $("inspector-close").addEventListener("click", () => this.closeInspector());

    const speed = $("speed");
    speed.max = String(SPEEDS.length - 1);
    speed.value = String(this.speedIndex);
    const showSpeed = () => {
      this.speedIndex = Number(speed.value);
      $("speed-label").textContent = SPEEDS[this.speedIndex].label;
      speed.setAttribute("aria-valuetext", SPEEDS[this.speedIndex].label);
    };
    speed.addEventListener("input", showSpeed);
    showSpeed();

    $("timeline").addEventListener("input", (event) => {
      this.stopAnimation();
      this.showPhase(Number(event.target.value));
    });

    const options = $("view-options");
    const choices = [{ key: "auto", short: "follow", label: "follow the animation", key_hint: "0" }, ...VIEWS];
    for (const choice of choices) {
      const label = document.createElement("label");
      label.title = `${choice.label} (key ${choice.key_hint})`;
      const radio = document.createElement("input");
      radio.type = "radio";
      radio.name = "view";
      radio.value = choice.key;
      radio.checked = choice.key === this.viewMode;
      radio.addEventListener("change", () => this.setView(choice.key));
      label.append(radio, document.createTextNode(choice.short));
      options.append(label);
    }
    $("range-mode").addEventListener("change", (event) => {
      this.perMap = event.target.value === "map";
      this.redraw();
    });
    $("mark-winners").addEventListener("change", (event) => {
      this.markWinners = event.target.checked;
      this.redraw();
    });
    $("own-gradient").addEventListener("change", (event) => {
      this.gradients = event.target.checked ? "sample" : "batch";
      this.redraw();
      if (this.inspected && ["dW", "db"].includes(this.inspected.view)) this.inspect(this.inspected.index, this.inspected.view, this.inspected.cell);
    });

    document.addEventListener("keydown", (event) => this.onKey(event));
    document.addEventListener("click", (event) => this.ignoreBusyClicks(event), true);
    $("copy-link").addEventListener("click", () => this.copyLink());
    // A link pasted into this tab's address bar: open it like a fresh load would.
    window.addEventListener("hashchange", () => {
      const link = decodeLink(location.hash);
      if (link) this.exclusive(() => this.openLink(link));
    });
    // The charts fill their panels; a panel changes width without a window resize when the
    // inspector docks or the grid reflows.
    const resizing = new ResizeObserver((entries) => {
      for (const entry of entries) {
        const plot = entry.target;
        if (plot.data) window.Plotly.Plots.resize(plot);
      }
    });
    for (const id of ["prediction-plot", "curves-plot"]) resizing.observe($(id));
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => this.redraw(), 150);
    });
  }

  // Warns, before any step, about a learning rate far above what the optimizer usually takes.
  checkLearningRate() {
    const { optimizer, learning_rate: rate } = this.training();
    const high = HIGH_LEARNING_RATE[optimizer];
    const warning = $("lr-warning");
    const name = OPTIMIZERS.find((o) => o.key === optimizer)?.label || optimizer;
    warning.hidden = !(rate > high);
    warning.textContent = warning.hidden ? "" : `A learning rate of ${rate} is unusually high for ${name} (above ${high}): each step may overshoot and the loss explode. Try ${DEFAULTS.learning_rate_for[optimizer]}.`;
    $("learning-rate").toggleAttribute("aria-invalid", !warning.hidden);
    if (!warning.hidden) $("learning-rate").setAttribute("aria-describedby", "lr-warning");
  }

  describePreset() {
    const preset = this.presets.find((p) => p.name === $("preset").value);
    $("preset-description").textContent = preset ? preset.description : "";
  }

  seed() {
    const value = Number($("seed").value);
    return Number.isInteger(value) && value >= 0 ? value : DEFAULTS.seed;
  }

  training() {
    return {
      optimizer: $("optimizer").value,
      learning_rate: Number($("learning-rate").value),
      batch_size: Number($("batch-size").value),
    };
  }

  // Runs actions one after another: one that arrives while another runs (a file chosen
  // during a reset, say) waits for its turn instead of interleaving requests.
  // Resolves to true when the action succeeded, false when it failed (its error shown).
  exclusive(action) {
    const run = this.queue.then(async () => {
      this.actionRunning = true;
      this.updateButtons();
      try {
        await action();
        return true;
      } catch (error) {
        if (this.sessionLost(error)) await this.recoverSession(error);
        else this.showError(error);
        return false;
      } finally {
        this.actionRunning = false;
        this.updateButtons();
      }
    });
    this.queue = run.then(() => undefined);
    return run;
  }

  idle() {
    return this.queue;
  }

  // Sessions expire when idle and vanish when the server restarts without its store.
  sessionLost(error) {
    return Boolean(error && error.status === 404 && this.session && error.path && error.path.includes(this.session.id));
  }

  async recoverSession(error) {
    const request = this.rebuildRequest();
    this.session = null;
    try {
      await this.buildSession(request, { keepSpecText: true });
      this.showError(new Error(`The server no longer had this session (${error.message}); a fresh network with the same architecture was built. Press the button again.`));
    } catch (again) {
      this.showError(again);
    }
  }

  updateButtons() {
    // A paused Play only lets its step in flight land: the controls are free at once (what is
    // pressed next runs after that step).
    const busy = this.actionRunning && !this.playing && !this.stoppingPlay;
    // While an action runs, its controls are unavailable at once (aria-disabled, and clicks on
    // them are ignored: ignoreBusyClicks), but they are dimmed (disabled) only once it has run
    // BUSY_DIM_MS: most Steps take ~20 ms, and dimming and undimming every control within two
    // frames is a flicker whose restyle and repaint ran on the two cores the server was
    // stepping on (measured: the Step's own request ~25 % slower).
    if (!busy) {
      clearTimeout(this.dimTimer);
      this.dimTimer = null;
      this.busyDimmed = false;
    } else if (!this.busyDimmed && !this.dimTimer) {
      this.dimTimer = setTimeout(() => {
        this.dimTimer = null;
        this.busyDimmed = true;
        this.updateButtons();
      }, BUSY_DIM_MS);
    }
    const dimmed = busy && this.busyDimmed;
    const closed = this.playing || !this.session;
    for (const id of BUSY_CONTROLS) setAvailability($(id), busy || closed, dimmed || closed);
    setAvailability($("btn-reset"), !this.session || busy, !this.session || dimmed);
    setAvailability($("btn-play"), closed || busy, closed || dimmed);
    $("btn-pause").disabled = !this.playing && !this.animating;
    // On a phone the player sticks to the top while an iteration runs (styles.css)
    document.body.classList.toggle("player-running", Boolean(this.playing || this.animating));
  }

  // A click (or a keyboard shortcut's click) on a control an action in progress makes
  // unavailable does nothing, as on a disabled button, before the control is dimmed too.
  ignoreBusyClicks(event) {
    const control = event.target instanceof Element ? event.target.closest("button") : null;
    if (control && !control.disabled && control.getAttribute("aria-disabled") === "true") {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }

  // --- the network ---------------------------------------------------------------------------

  async buildSession(request, options = {}) {
    const session = await api.createSession(request);
    if (!options.keepPrevious) this.dropUndo();
    await this.adoptSession(session, options);
  }

  async importSession(file) {
    const session = await api.importSession(file);
    this.dropUndo();
    $("preset").value = this.presets.some((p) => p.name === session.preset) ? session.preset : "";
    await this.adoptSession(session);
    await this.loadHistory(session.id);
    $("eval-result").textContent = `Imported ${file.name}: ${session.preset || "custom network"} at step ${session.step}.`;
  }

  // The curves of a session trained before the page had it (imported, or opened by a link).
  async loadHistory(id) {
    const past = await api.history(id);
    this.history = {
      steps: past.steps,
      loss: past.loss,
      accuracy: past.accuracy,
      evalSteps: past.evaluations.map((e) => e.step),
      evalAccuracy: past.evaluations.map((e) => e.accuracy),
    };
    await this.drawHistory();
  }

  /** Download names that say which network and step a file holds. */
  nameExports() {
    const stem = `cnnviz-${this.session.preset || "custom"}-step${this.session.step}`;
    $("export-session").download = `${stem}.npz`;
    $("export-pytorch").download = `${stem}-pytorch.zip`;
  }

  async adoptSession(session, { keepSpecText = false, keepPrevious = false } = {}) {
    const previous = this.session;
    this.session = session;
    rememberOwnSession(session.id);
    $("export-session").href = api.exportUrl(session.id);
    $("export-pytorch").href = api.exportUrl(session.id, "pytorch");
    const binary = session.positive_class !== null && session.positive_class !== undefined;
    $("positive-row").hidden = !binary;
    if (binary) $("positive-class").value = String(session.positive_class);
    this.nameExports();
    if (previous && previous.id !== session.id && !keepPrevious) api.deleteSession(previous.id).catch(() => {});
    if (!keepSpecText) $("spec-editor").value = formatSpec(session.spec);
    this.builder.load(session.spec);
    this.clearSpecError();
    if (session.spec && session.spec.seed !== undefined) $("seed").value = String(session.spec.seed);
    this.describeSession();
    this.history = emptyHistory();
    this.trainedTestDigits = new Set(); // test-split digits this network was stepped on
    $("eval-result").textContent = "";
    this.evaluation.clear();
    await this.drawHistory();
    this.closeInspector();
    this.record = null;
    this.useExampleOf(session.preset);
    if (this.inputs.current) await this.traceInput(this.inputs.current);
  }

  // A preset with its own example (the notes' worked example) traces that example; any
  // other network goes back to the digit chosen before.
  useExampleOf(presetName) {
    const example = presetExample(this.presets, presetName);
    if (this.inputs.current && this.inputs.current.kind !== "example") this.chosenInput = this.inputs.current;
    if (example) this.inputs.current = example;
    else if (this.inputs.current && this.inputs.current.kind === "example") this.inputs.current = this.chosenInput || null;
    showExampleNote(example, () => {
      if (!this.chosenInput) return;
      this.inputs.current = this.chosenInput;
      showExampleNote(null);
      this.exclusive(() => this.traceInput(this.inputs.current));
    });
  }

  describeSession() {
    const s = this.session;
    const name = s.preset || "custom network";
    const rule = s.target_rule ? ` · ${s.target_rule}` : "";
    $("session-status").textContent = `${name}, seed ${s.spec.seed ?? "—"} · step ${s.step}${rule}`;
  }

  // Builds the JSON editor's spec, or `given` (the layer builder's).
  async applySpec(given = null) {
    let spec = given;
    if (!spec) {
      try {
        spec = JSON.parse($("spec-editor").value);
      } catch (error) {
        this.showSpecError(`Not valid JSON: ${error.message}`);
        return;
      }
    }
    try {
      // The builder's network takes the Seed field's seed; the JSON's own "seed" is the JSON's.
      await this.buildSession(given ? { spec, seed: this.seed() } : { spec }, { keepSpecText: true });
      $("preset").value = "";
      $("preset-description").textContent = "Custom network from the JSON editor.";
    } catch (error) {
      if (error.status === 422 || error.status === 400) this.showSpecError(formatDetail(error.detail));
      else throw error;
    }
  }

  showSpecError(message) {
    const box = $("spec-error");
    box.textContent = message;
    box.hidden = false;
    $("spec-details").open = true;
    const editor = $("spec-editor");
    editor.setAttribute("aria-invalid", "true");
    const range = locateLayer(editor.value, message);
    if (range) {
      editor.focus();
      editor.setSelectionRange(range.start, range.end);
    }
  }

  clearSpecError() {
    $("spec-error").hidden = true;
    $("spec-editor").removeAttribute("aria-invalid");
  }

  // The request that builds the current network again with fresh weights (and the chosen
  // positive digit, for a network with one output).
  rebuildRequest() {
    const s = this.session;
    const request = s.preset ? { preset: s.preset, seed: this.seed() } : { spec: s.spec, seed: this.seed() };
    if (s.positive_class !== null && s.positive_class !== undefined) request.positive_class = Number($("positive-class").value);
    return request;
  }

  // Reset builds fresh weights but keeps the trained network on the server until the next
  // build, so "Undo reset" brings it back with its curves (a reset is never a silent loss).
  async reset() {
    this.dropUndo();
    const kept = { session: this.session, history: this.history, trainedTestDigits: this.trainedTestDigits };
    await this.buildSession(this.rebuildRequest(), { keepSpecText: !this.session.preset, keepPrevious: true });
    this.undo = kept;
    $("undo-text").textContent = `Reset: fresh weights. The network you had (step ${kept.session.step}) is kept until the next build.`;
    $("undo-bar").hidden = false;
    $("phase-label").textContent = "Reset: fresh weights. Press Step to train.";
  }

  async undoReset() {
    const kept = this.undo;
    if (!kept) return;
    this.undo = null;
    $("undo-bar").hidden = true;
    await this.adoptSession(kept.session, { keepSpecText: !kept.session.preset });
    if (kept.session.preset) $("preset").value = kept.session.preset;
    this.history = kept.history;
    this.trainedTestDigits = kept.trainedTestDigits;
    await this.drawHistory();
    $("phase-label").textContent = `Reset undone: the network is back at step ${kept.session.step}.`;
  }

  // The network a reset replaced is deleted once it can no longer be brought back.
  dropUndo() {
    if (this.undo) api.deleteSession(this.undo.session.id).catch(() => {});
    this.undo = null;
    $("undo-bar").hidden = true;
  }

  // --- iterations ----------------------------------------------------------------------------

  // Names the stretches of the timeline (forward, loss, backward, gradients, update) under
  // the slider, each as wide as its phases.
  labelTimeline() {
    const partOf = { input: "forward", forward: "forward", loss: "loss", backward: "backward", "input-grad": "backward", gradients: "gradients" };
    const parts = [];
    for (const phase of this.phases) {
      const part = partOf[phase.kind] || "update";
      if (parts.length && parts[parts.length - 1].part === part) parts[parts.length - 1].count += 1;
      else parts.push({ part, count: 1 });
    }
    const key = parts.map((p) => `${p.part}${p.count}`).join(",");
    if (key === this.timelineKey) return; // the same stretches as the record before
    this.timelineKey = key;
    const names = { forward: "forward", loss: "loss", backward: "backward", gradients: "grads", update: "update" };
    $("timeline-parts").replaceChildren(
      ...parts.map(({ part, count }) => {
        const span = document.createElement("span");
        span.dataset.part = part;
        span.style.flex = String(count);
        span.textContent = names[part];
        span.title = names[part];
        return span;
      }),
    );
  }

  // answer: an Answer (tensors.js) of a trace or a step; fields: what it was asked to carry;
  // live: a step of live training (only the shown view's arrays, nothing fetched later).
  setRecord(answer, isStep, fields = ALL_FIELDS, live = false) {
    this.recordCounter += 1;
    const trace = answer.trace;
    this.record = { id: this.recordCounter, answer, trace, step: isStep ? answer.json : null, fields: new Set(fields), live, later: null };
    this.pendingBatch = null;
    this.phases = buildPhases(trace, isStep);
    const timeline = $("timeline");
    timeline.max = String(this.phases.length - 1);
    timeline.disabled = false;
    this.labelTimeline();
    this.strip.build(trace);
    this.closeInspector();
    this.whatIf = null;
    hideWhatIfBanner();
  }

  // A step's batch ({step, input}) in the batch strip; its thumbnails are fetched separately.
  showBatch({ step, input }) {
    this.batch.show(step, input, { thumbnails: false });
  }

  showPendingBatch() {
    this.showBatch(this.pendingBatch);
    this.pendingBatch = null;
  }

  // The charts of a new record, drawn once, after its strip. While animating, each chart is
  // drawn in a task of its own after a frame, not inside the frame that draws the maps, so
  // that no task holds both (a chart costs as much as all the maps). While live training
  // plays, the batch strip is filled in the same way, first, and the saliency is redrawn at
  // most every LIVE_SALIENCY_MS.
  async drawCharts(record, spread, { live = false, batch = null } = {}) {
    const pause = () => (spread ? afterFrame() : null);
    if (batch) {
      await pause();
      this.showBatch(batch);
    }
    await pause();
    const result = await drawPrediction($("prediction-plot"), record.trace, { live });
    const summary = predictionSummary(result, record.trace);
    $("prediction-summary").textContent = summary;
    $("prediction-brief").textContent = `Prediction: ${summary.split(";")[0]}`;
    if (!live || performance.now() - this.saliencyDrawnAt >= LIVE_SALIENCY_MS) {
      this.saliencyDrawnAt = performance.now();
      await pause();
      await drawSaliency($("saliency-plot"), record.trace, $("saliency-colorbar"));
    }
    if (record.step) {
      await pause();
      await this.drawHistory({ live });
    }
  }

  async traceInput(input) {
    if (!this.session) return;
    if (input.kind !== "example") showExampleNote(null);
    this.stopAnimation();
    const answer = await api.trace(this.session.id, input);
    this.setRecord(answer, false);
    this.batch.clear();
    await this.showPhase(phaseIndex(this.phases, "loss"));
  }

  // The input Step and Forward use; a drawing or upload still waiting for its label stops them
  // (they would otherwise run on the previous input).
  inputInUse() {
    if (this.inputs.pending) {
      $("label-select").focus();
      throw new Error(`Choose which digit ${this.inputs.pending.description} is (“This digit is a”, in the Input panel) first: it is used once it has a label.`);
    }
    return this.inputs.current;
  }

  async forward() {
    this.setRecord(await api.trace(this.session.id, this.inputInUse()), false);
    this.batch.clear();
    await this.animate(0, phaseIndex(this.phases, "loss"));
  }

  async backward() {
    if (!this.record) this.setRecord(await api.trace(this.session.id, this.inputs.current), false);
    const start = Math.max(this.phase, phaseIndex(this.phases, "loss"));
    const end = phaseIndex(this.phases, "gradients");
    await this.animate(start >= end ? phaseIndex(this.phases, "loss") : start, end);
  }

  async update() {
    await this.runStep();
    await this.animate(phaseIndex(this.phases, "update-before"), this.phases.length - 1);
  }

  async stepOnce() {
    await this.runStep();
    await this.animate(0, this.phases.length - 1);
  }

  // One training iteration on the server; the timings feed the render benchmark. A step the
  // user will scrub through and inspect asks for its maps and fetches its weights and gradients
  // once they are drawn, or sooner if a phase or the inspector needs them (later.js,
  // startLater); live training asks only for what the view shows. The batch strip, which is
  // not a map, is also filled in once the maps are drawn.
  async runStep({ live = false } = {}) {
    const clicked = performance.now();
    performance.mark("cnnviz:step-start");
    const fields = live ? this.liveFields() : stepFields(this.viewMode);
    // The last step's weights and gradients land first: a new step would make them gone.
    if (this.record && this.record.later) await this.record.later.promise;
    const request = { input: this.inputInUse(), training: this.training(), fields };
    probe.lastStepRequest = request;
    const answer = await api.step(this.session.id, request.input, request.training, fields);
    const input = request.input;
    if (input && input.kind === "mnist" && input.split === "test") this.trainedTestDigits.add(input.index);
    const answered = performance.now();
    const step = answer.json;
    this.session.step = step.step;
    this.describeSession();
    this.history.steps.push(step.step);
    this.history.loss.push(step.loss);
    this.history.accuracy.push(step.batch_accuracy);
    this.setRecord(answer, true, fields, live);
    this.pendingBatch = { step, input: this.inputs.current };
    this.pendingTiming = { clicked, answered };
    return answer;
  }

  // What live training draws: the shown view of the last phase (activations when following).
  liveView() {
    return this.viewMode === "auto" ? "a" : this.viewMode;
  }

  liveFields() {
    const view = this.liveView();
    if (view === "W") return ["params"];
    if (view === "dW" || view === "db") return ["grads"];
    return [view, "argmax"];
  }

  play() {
    if (this.playing || !this.session) return this.queue;
    this.playing = true;
    this.updateButtons();
    return this.exclusive(async () => {
      try {
        while (this.playing) {
          const delay = SPEEDS[this.speedIndex].ms;
          const live = delay === 0;
          await this.runStep({ live });
          const last = live ? this.livePhase() : this.phases.length - 1;
          if (!this.playing) {
            await this.showPhase(last); // paused mid-step: still show its result
            break;
          }
          await this.animate(live ? last : 0, last);
          if (!live) await sleep(delay);
        }
      } finally {
        this.playing = false;
        this.stoppingPlay = false;
        if (this.pendingBatch) this.showPendingBatch(); // the last live step's, not drawn yet
        this.batch.fetchShown();
        if (this.record && this.chartsDrawnFor !== this.record.id) {
          this.chartsDrawnFor = this.record.id;
          this.drawCharts(this.record, true).catch((error) => this.showError(error));
        }
      }
    });
  }

  pause() {
    if (!this.playing) {
      this.stopAnimation();
      return;
    }
    this.playing = false;
    this.stoppingPlay = true;
    this.stopAnimation();
  }

  // Live training shows the forward pass's end (every activation) when following the animation.
  livePhase() {
    return this.viewMode === "auto" ? phaseIndex(this.phases, "loss") : this.phases.length - 1;
  }

  stopAnimation() {
    this.animationToken++;
    this.animating = false;
    this.updateButtons();
  }

  // Long training runs as several requests of at most TRAIN_CHUNK_STEPS steps (the server caps
  // the steps and the work of one request): the curves grow after each, a progress bar shows
  // how far the run is, and Cancel stops it after the request in flight (what ran is kept).
  async trainSteps() {
    const steps = Math.max(1, Math.round(Number($("train-steps").value) || DEFAULTS.train_steps));
    const run = { cancelled: false };
    this.trainingRun = run;
    const bar = $("train-progress-bar");
    bar.max = steps;
    bar.value = 0;
    $("train-progress-text").textContent = `0 / ${steps} steps`;
    $("train-cancel").disabled = false;
    $("train-progress").hidden = false;
    let chunk = Math.min(TRAIN_CHUNK_STEPS, steps);
    let done = 0;
    let last = null;
    try {
      while (done < steps && !run.cancelled) {
        const size = Math.min(chunk, steps - done);
        let answer;
        try {
          answer = await api.train(this.session.id, size, this.training());
        } catch (error) {
          // Over one of the server's per-request caps: the request changed nothing, so the
          // same steps are asked again in smaller pieces.
          if (size > 1 && isCapRefusal(error)) {
            chunk = Math.max(1, Math.floor(size / 2));
            continue;
          }
          throw error;
        }
        last = answer;
        const h = answer.history;
        this.history.steps.push(...h.steps);
        this.history.loss.push(...h.loss);
        this.history.accuracy.push(...h.accuracy);
        this.session.step = answer.step;
        done += answer.steps_run;
        bar.value = done;
        $("train-progress-text").textContent = `${done} / ${steps} steps`;
        this.describeSession();
        await this.drawHistory();
      }
    } finally {
      this.trainingRun = null;
      $("train-progress").hidden = true;
    }
    if (last) {
      const summary = `last batch loss ${formatNumber(last.loss)}, batch accuracy ${(last.accuracy * 100).toFixed(1)}%`;
      $("eval-result").textContent = done < steps ? `Cancelled after ${done} of ${steps} steps: ${summary}.` : `Trained ${done} steps: ${summary}.`;
    } else {
      $("eval-result").textContent = "Cancelled before any step ran.";
    }
    if (this.inputs.current) await this.traceInput(this.inputs.current);
  }

  // Test digits the user stepped on were in training batches: they are left out of the score.
  async evaluate() {
    const trainedOn = [...this.trainedTestDigits];
    const answer = await api.evaluate(this.session.id, undefined, trainedOn);
    this.history.evalSteps.push(answer.step);
    this.history.evalAccuracy.push(answer.accuracy);
    await this.drawHistory();
    const left = trainedOn.length ? ` (leaving out the ${trainedOn.length === 1 ? "test digit" : `${trainedOn.length} test digits`} you trained on: #${trainedOn.join(", #")})` : "";
    $("eval-result").textContent = `Test accuracy at step ${answer.step}: ${(answer.accuracy * 100).toFixed(1)}% on ${answer.samples} held-out digits${left} (mean loss ${formatNumber(answer.loss)}).`;
    await this.evaluation.show(answer, this.session.positive_class);
  }

  // A digit picked outside the input panel (the evaluation's gallery) becomes the input.
  async traceChosen(input, { reveal = true } = {}) {
    this.inputs.current = input;
    this.inputs.setPending(null); // a drawing still waiting for its label is dropped
    if (input.pixels) this.inputs.describe();
    else $("input-caption").textContent = `MNIST ${input.split} #${input.index}, label ${input.label}`;
    await this.traceInput(input);
    if (reveal) $("strip").scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  // --- shareable links (issue 10, item 17): js/permalink.js ------------------------------------

  // Rebuilds the view a link describes: its session when the server still has it, else a
  // fresh network of the same architecture and seed (and says so); then its input, view,
  // phase and inspected cell.
  async openLink(link) {
    this.openingLink = true;
    const notes = [...link.problems];
    let session = null;
    let opened = "rebuilt";
    try {
      const linked = await linkedSession(link);
      if (linked && isOwnSession(linked.id)) {
        session = linked;
        opened = "reused";
        notes.unshift(`the linked session was reused (step ${session.step})`);
      } else if (linked) {
        // Someone else's session: training it here would change theirs (and replacing it,
        // delete it), so this page gets a copy of it.
        try {
          session = await api.copySession(linked.id);
          opened = "copied";
          notes.unshift(`a copy of the linked session was opened (step ${session.step}, with its training curves): training it here leaves the shared one as it was`);
        } catch (error) {
          notes.unshift(`its session could not be copied (${error.message}), so a fresh network with the same architecture and seed was built (the training done in it is not restored)`);
        }
      } else if (link.sessionId) {
        notes.unshift("its session no longer exists on the server, so a fresh network with the same architecture and seed was built (the training done in it is not restored)");
      }
      if (session) {
        $("preset").value = this.presets.some((p) => p.name === session.preset) ? session.preset : "";
        await this.adoptSession(session);
        await this.loadHistory(session.id);
      } else {
        await this.buildLinkedNetwork(link, notes);
      }
      this.describePresetOf(this.session);
      let input = null;
      try {
        input = await linkedInput(link, () => presetExample(this.presets, this.session.preset));
      } catch (error) {
        notes.push(`its input could not be opened (${error.message})`);
      }
      if (input) await this.traceChosen(input, { reveal: false });
      else if (!this.inputs.current) {
        const first = this.inputs.grid.querySelector(".thumb");
        if (first) first.click();
        await this.idle();
      }
      if (VIEWS.some((v) => v.key === link.view)) this.setView(link.view);
      if (link.phase !== null && this.record) {
        // A link made during a step's update phases: replaying the step would train the network.
        if (link.phase > this.phases.length - 1) notes.push("it showed a training step's update, which is not replayed (that would train the network): this input's forward and backward pass is shown");
        await this.showPhase(Math.min(link.phase, this.phases.length - 1));
      }
      if (link.inspected && this.record) {
        const { index, view, cell } = link.inspected;
        if (index >= -1 && index < this.record.trace.layers.length) this.inspect(index, view, cell);
        else notes.push("its selected cell is not in this network");
      }
    } finally {
      this.openingLink = false;
    }
    const note = $("link-note");
    note.textContent = `Opened a shared link: ${notes.join("; ")}.`;
    note.dataset.state = opened;
    note.hidden = false;
    this.syncLink();
  }

  async buildLinkedNetwork(link, notes) {
    const request = link.preset ? { preset: link.preset } : link.spec ? { spec: link.spec } : { preset: DEFAULTS.preset };
    if (link.seed !== null) request.seed = link.seed;
    if (link.positiveClass !== null) request.positive_class = link.positiveClass;
    try {
      await this.buildSession(request);
    } catch (error) {
      notes.push(`its network could not be built (${error.message}); the default network is shown`);
      await this.buildSession({ preset: DEFAULTS.preset, seed: DEFAULTS.seed });
    }
    $("preset").value = this.session.preset || "";
  }

  describePresetOf(session) {
    if (session.preset) this.describePreset();
    else $("preset-description").textContent = "Custom network (from a link, the builder or the JSON editor).";
  }

  linkState() {
    const s = this.session;
    return {
      sessionId: s.id,
      preset: s.preset,
      spec: s.preset ? null : s.spec,
      seed: s.spec ? s.spec.seed : null,
      positiveClass: s.positive_class,
      input: this.inputs.current,
      phase: this.record ? this.phase : null,
      view: this.viewMode,
      inspected: this.inspected,
    };
  }

  // Keeps the URL's hash describing what is shown (replaceState: no history entry per change,
  // and no hashchange of our own).
  syncLink() {
    if (!this.session || this.openingLink) return;
    const hash = encodeLink(this.linkState());
    if (hash === this.writtenHash) return;
    this.writtenHash = hash;
    history.replaceState(null, "", hash);
  }

  async copyLink() {
    this.syncLink();
    const note = $("link-note");
    note.hidden = false;
    note.dataset.state = "copied";
    try {
      await navigator.clipboard.writeText(location.href);
      note.textContent = "Link copied: it opens this network, input, phase and selected cell.";
    } catch {
      note.textContent = "Copy this page's address (the link in the address bar): it opens this network, input, phase and selected cell.";
    }
  }

  drawHistory({ live = false } = {}) {
    const h = this.history;
    $("curves-summary").textContent = h.steps.length
      ? `${h.steps.length} step${h.steps.length === 1 ? "" : "s"}; last batch loss ${formatNumber(h.loss[h.loss.length - 1])}, batch accuracy ${(h.accuracy[h.accuracy.length - 1] * 100).toFixed(0)}%`
      : "No training yet: press Step, Play or Train steps.";
    return drawCurves($("curves-plot"), h, { live });
  }

  // --- the timeline --------------------------------------------------------------------------

  // Plays phases from..to, one every SPEEDS[speed] ms; a newer animation or a scrub cancels it.
  async animate(from, to) {
    const token = ++this.animationToken;
    const delay = SPEEDS[this.speedIndex].ms;
    if (delay === 0) {
      await this.showPhase(to);
      return;
    }
    this.animating = true;
    this.updateButtons();
    try {
      for (let k = from; k <= to; k++) {
        if (token !== this.animationToken) return;
        const started = performance.now();
        await this.showPhase(k, { spread: true });
        if (k < to) await sleep(Math.max(0, delay - (performance.now() - started)));
      }
    } finally {
      if (token === this.animationToken) {
        this.animating = false;
        this.updateButtons();
      }
    }
  }

  async showPhase(k, { spread = false } = {}) {
    if (!this.record || this.phases.length === 0) return;
    const phaseNumber = Math.max(0, Math.min(this.phases.length - 1, k));
    this.phase = phaseNumber;
    const phase = this.phases[phaseNumber];
    const started = performance.now();
    this.strip.setStates((index) => (this.viewMode === "auto" || !isUpdate(phase) ? layerState(phase, index) : "done"));
    if (spread || this.playing) this.followActiveCard();
    $("timeline").value = String(phaseNumber);
    $("timeline").setAttribute("aria-valuetext", phase.label);
    $("phase-counter").textContent = `${phaseNumber + 1} / ${this.phases.length}`;
    $("phase-label").textContent = this.phaseText(phase);
    // The prediction exists once the forward pass is done, dL/dx once the backward pass is.
    setPending($("prediction-panel"), phaseNumber < phaseIndex(this.phases, "loss"));
    // (A live step shows the forward pass's end, but its dL/dx was computed and fetched.)
    setPending($("saliency-panel"), phaseNumber < phaseIndex(this.phases, "input-grad") && !this.record.live);
    if (!(await this.awaitLater(phase))) return;
    const complete = await this.strip.render(this.record, (index) => this.viewFor(index, phase), {
      perMap: this.perMap,
      markWinners: this.markWinners,
      gradients: this.gradients,
    });
    if (!complete) return;
    // Every map is drawn: the Step's timing stops here; the charts follow, one per frame.
    const timing = this.pendingTiming;
    this.pendingTiming = null;
    if (timing) {
      performance.mark("cnnviz:step-rendered");
      const finished = performance.now();
      timing.entry = { total: finished - timing.clicked, api: timing.answered - timing.clicked, render: finished - timing.answered, charts: null };
      probe.stepTimings.push(timing.entry);
    }
    // Live training draws every step's maps, and the charts and the batch strip at most every
    // LIVE_CHARTS_MS (without waiting for them: the next step is already on its way); the
    // batch's thumbnails wait for Pause.
    const live = this.playing && SPEEDS[this.speedIndex].ms === 0;
    if (this.pendingBatch && !live) this.showPendingBatch(); // thumbnails fetched just below
    if (!this.record.live) this.startLater();
    if (timing && !live) this.batch.fetchShown();
    const chartsWait = live && performance.now() - this.chartsDrawnAt < LIVE_CHARTS_MS;
    if (this.chartsDrawnFor !== this.record.id && !chartsWait) {
      this.chartsDrawnFor = this.record.id;
      this.chartsDrawnAt = performance.now();
      const batch = live ? this.pendingBatch : null;
      this.pendingBatch = null;
      const charts = this.drawCharts(this.record, true, { live, batch })
        .then(() => {
          if (timing) timing.entry.charts = performance.now() - timing.clicked;
        })
        .catch((error) => this.showError(error));
      if (!spread && !live) await charts;
    }
    if (spread || this.playing) this.followActiveCard();
    probe.phaseRenders += 1;
    probe.lastPhase = { index: phaseNumber, kind: phase.kind, ms: performance.now() - started };
    probe.renders += 1;
    this.syncLink();
  }

  // --- a step's weights and gradients, fetched after its maps (later.js) ---
  // Starts fetching what a step record lacks, once (record.later; null when it lacks nothing).
  startLater(record = this.record) {
    if (record && record.step && !record.live && !record.later) fetchLater(record, this.session.id);
    return record ? record.later : null;
  }

  // A phase whose cards show weights or gradients waits for them, saying so; false when the
  // page moved on meanwhile. If they are gone, the cards and the label say so and offer Step.
  async awaitLater(phase) {
    const record = this.record;
    if (!needsLater(this.viewMode) && !(this.viewMode === "auto" && needsLater(phase.view))) return true;
    const later = this.startLater(record);
    if (!later || later.state === "ready") return true;
    if (later.state === "loading") {
      $("phase-label").textContent = `${this.phaseText(phase)} (loading the weights and gradients of this step…)`;
      await later.promise;
      if (this.record !== record || this.phases[this.phase] !== phase) return false;
      $("phase-label").textContent = this.phaseText(phase);
    }
    if (later.state === "gone") $("phase-label").textContent = later.message;
    return true;
  }

  // On a narrow screen (one column) the page scrolls the layer the animation is at into view
  // just under the sticky player, so the two are watched together.
  followActiveCard() {
    if (!window.matchMedia(NARROW_LAYOUT_QUERY).matches) return;
    const card = document.querySelector('.layer-card[data-state="active"]');
    if (!card) return;
    const playerBottom = $("player").getBoundingClientRect().bottom;
    const box = card.getBoundingClientRect();
    if (box.top >= playerBottom && box.bottom <= window.innerHeight) return;
    const behavior = window.matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "instant";
    window.scrollTo({ top: window.scrollY + box.top - playerBottom - 6, behavior });
  }

  phaseText(phase) {
    const trace = this.record.trace;
    if (phase.kind === "loss") {
      if (this.record.live && this.record.step) {
        return `Live training, step ${this.record.step.step}: batch loss ${formatNumber(this.record.step.loss)}; the traced digit's L = ${formatNumber(trace.loss)} (label ${trace.label}, predicted ${trace.predicted_class ?? "?"}). (Step fetches a full iteration to scrub and inspect.)`;
      }
      const binary = Array.isArray(trace.target) && trace.target.length === 1;
      const example = trace.label == null && Array.isArray(trace.target); // a preset's example: a target, no digit
      const truth = example ? `target [${trace.target.map(formatNumber).join(", ")}]` : binary ? `target ${trace.target[0]} for digit ${trace.label}` : `label ${trace.label}`;
      return `${phase.label}: L = ${formatNumber(trace.loss)} (${truth}${example ? "" : `, predicted ${trace.predicted_class ?? "?"}`})`;
    }
    if (phase.kind === "gradients") {
      const s = this.record.step;
      if (gradientSource(this.record, this.gradients) === "batch") {
        return `Gradients: dL/dW and dL/db averaged over the mini-batch of ${s.batch_size} — exactly what the update applies (tick "this image only" for the traced image's own)`;
      }
      return s ? "Gradients of your input only (sample 1 of the batch): dL/dW = input ⋆ δ, dL/db = Σ δ; the update applies the batch mean" : "Gradients of this image: dL/dW = input ⋆ δ, dL/db = Σ δ (no update yet: press Step or Update to train on a batch)";
    }
    if (phase.kind === "update-change" && this.record.step) {
      const s = this.record.step;
      const rule = s.optimizer === "sgd" ? `−${s.learning_rate}·dL/dW over the batch of ${s.batch_size}` : `${s.optimizer}, lr ${s.learning_rate}`;
      return `Update: the change applied, ${rule}; batch loss ${formatNumber(s.loss)} → ${formatNumber(s.loss_after)}`;
    }
    return phase.label;
  }

  viewFor(index, phase) {
    if (this.viewMode !== "auto") return this.viewMode;
    if (index === INPUT_LAYER && phase.view !== "a" && phase.view !== "delta") return "a";
    return phase.view;
  }

  setView(view) {
    this.viewMode = view;
    for (const radio of document.querySelectorAll('input[name="view"]')) radio.checked = radio.value === view;
    this.redraw();
  }

  redraw() {
    this.strip.invalidate();
    if (this.record) this.showPhase(this.phase);
  }

  // --- the inspector -------------------------------------------------------------------------

  inspect(index, view, cell) {
    if (!this.record) return;
    let sections;
    const missing = ALL_FIELDS.filter((field) => !this.record.fields.has(field));
    try {
      const later = this.startLater();
      if (missing.length > 0 && later) {
        const record = this.record;
        if (later.state === "loading") later.promise.then(() => this.record === record && this.inspected && this.inspected.cell === cell && this.inspect(index, view, cell));
        sections = [{ heading: later.state === "loading" ? "Loading the weights and gradients of this step…" : "The weights and gradients of this step are no longer available", explanation: later.message || "The arithmetic behind this number needs them; it appears here as soon as they arrive." }];
      } else if (missing.length > 0) {
        sections = [{ heading: "Not every number of this step was fetched", explanation: `Live training fetched only what the view shows (${[...this.record.fields].join(", ")}), so the arithmetic behind this number is not on the page. Press Step (or Forward) to fetch a full iteration and click again.` }];
      } else {
        sections = explainCell(this.record, index, view, cell, { gradients: gradientSource(this.record, this.gradients) });
      }
    } catch (error) {
      this.showError(new Error(`Cannot explain this cell: ${error.message}`));
      return;
    }
    const name = index === INPUT_LAYER ? "input x" : this.record.trace.layers[index].name;
    const where = cell.f !== undefined ? `[${cell.f},${cell.c},${cell.r},${cell.s}]` : cell.u !== undefined ? `[${cell.u},${cell.k}]` : cell.k !== undefined ? `[${cell.k}]` : `[${cell.map},${cell.i},${cell.j}]`;
    renderInspector($("inspector"), `${name} · ${view} ${where}`, sections);
    attachExperiments($("inspector"), this.experimentContext(index, view, cell));
    $("inspector").hidden = false;
    document.body.classList.add("inspecting");
    this.inspected = { index, view, cell };
    this.syncLink();
    this.strip.mark(this.marksFor(index, view, cell, sections));
    this.strip.reveal(index);
    if (getComputedStyle($("inspector")).position !== "fixed") {
      $("inspector").scrollIntoView({ block: "nearest", behavior: "smooth" });
    }
  }

  marksFor(index, view, cell, sections) {
    const marks = [{ index, views: [view], cells: [{ map: cell.map ?? 0, i: cell.i ?? cell.u ?? cell.k ?? 0, j: cell.j ?? cell.k ?? 0 }] }];
    if (cell.k !== undefined && cell.u === undefined) marks[0].cells = [{ map: 0, i: cell.k, j: 0 }];
    const patch = sections[0] && sections[0].patch;
    if (patch) {
      const cells = [];
      for (let c = 0; c < patch.channels; c++) {
        cells.push({ map: c, i: patch.i * patch.stride[0] - patch.padding[0], j: patch.j * patch.stride[1] - patch.padding[1], h: patch.kernel[0], w: patch.kernel[1] });
      }
      marks.push({ index: index - 1, views: ["a", "z"], cells, color: COLORS.winner });
    }
    for (const section of sections) if (section.marks) marks.push(...section.marks);
    const window = sections[0] && sections[0].window;
    if (window) {
      const first = window.rows[0];
      marks.push({ index: index - 1, views: ["a", "z", "delta"], cells: [{ map: cell.map, i: first.row, j: first.col, h: window.kernel[0], w: window.kernel[1] }], color: COLORS.winner });
    }
    return marks;
  }

  // --- what-if traces and gradient checks (issue 9): the session is never changed ----------

  experimentContext(index, view, cell) {
    return {
      record: this.record,
      index,
      view,
      cell,
      sessionId: this.session.id,
      input: this.inputs.current,
      whatIf: this.whatIf,
      onShow: (answer, change, description, baseTrace) => this.exclusive(() => this.showWhatIf(answer, change, description, baseTrace, { index, view, cell })),
      onClear: () => this.exclusive(() => this.clearWhatIf()),
    };
  }

  async showWhatIf(answer, change, description, baseTrace, inspected) {
    this.stopAnimation();
    this.setRecord(answer, false);
    this.whatIf = { change, description, baseTrace };
    await this.showPhase(this.phases.length - 1);
    this.inspect(inspected.index, inspected.view, inspected.cell);
    showWhatIfBanner(description, () => this.exclusive(() => this.clearWhatIf()));
  }

  async clearWhatIf() {
    hideWhatIfBanner();
    this.whatIf = null;
    if (this.inputs.current) await this.traceInput(this.inputs.current);
  }

  closeInspector() {
    if (!this.inspected && $("inspector").hidden) return;
    $("inspector").hidden = true;
    document.body.classList.remove("inspecting");
    this.inspected = null;
    this.strip.mark([]);
    this.syncLink();
  }

  // --- keyboard and errors -------------------------------------------------------------------

  onKey(event) {
    const target = event.target;
    const typing = target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && !["range", "radio", "checkbox", "button"].includes(target.type)) || target.tagName === "SELECT");
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    const press = (id) => {
      if (!$(id).disabled) $(id).click();
    };
    const handled = {
      s: () => press("btn-step"),
      f: () => press("btn-forward"),
      b: () => press("btn-backward"),
      u: () => press("btn-update"),
      r: () => press("btn-reset"),
      p: () => (this.playing ? this.pause() : this.play()),
      " ": () => (this.playing ? this.pause() : this.play()),
      ArrowRight: () => this.scrub(1),
      ArrowLeft: () => this.scrub(-1),
      Home: () => this.scrub(-Infinity),
      End: () => this.scrub(Infinity),
      Escape: () => this.closeInspector(),
      "?": () => ($("shortcuts").open = !$("shortcuts").open),
    };
    const views = ["auto", ...VIEWS.map((v) => v.key)];
    let action = handled[key.length === 1 ? key.toLowerCase() : key];
    if (/^[0-6]$/.test(key)) action = () => this.setView(views[Number(key)]);
    if (target && target.type === "range" && key.startsWith("Arrow")) return;
    // Space plays only from the page itself or the player's background, never from a control
    // (a checkbox, a link, a thumbnail, a map) where Space means something else.
    if (key === " " && !spaceMayPlay(target)) return;
    if (!action) return;
    event.preventDefault();
    action();
  }

  scrub(delta) {
    if (!this.record) return;
    this.stopAnimation();
    const target = delta === Infinity ? this.phases.length - 1 : delta === -Infinity ? 0 : this.phase + delta;
    this.showPhase(target);
  }

  showError(error) {
    // Plain words only: the server's sentence, never an HTTP status code.
    const message = error && error.message ? error.message : String(error);
    $("error-text").textContent = message;
    $("error-banner").hidden = false;
    probe.errors.push(message);
  }
}

// A refusal for size (the server's steps, samples or work per request) rather than for what was asked.
function isCapRefusal(error) {
  if (!error || error.status !== 422) return false;
  if (error.body && error.body.cap) return true;
  const detail = error.detail;
  if (Array.isArray(detail)) return detail.some((item) => Array.isArray(item.loc) && item.loc.includes("steps"));
  return typeof detail === "string" && /samples one request may train on/.test(detail);
}

const NARROW_LAYOUT_QUERY = "(max-width: 900px)";
// The controls an action in progress makes unavailable, and how long it runs before they look it.
const BUSY_CONTROLS = ["btn-forward", "btn-backward", "btn-update", "btn-step", "train", "evaluate", "apply-spec", "build-preset"];
const BUSY_DIM_MS = 150;

// unavailable: clicks do nothing (aria-disabled, for assistive technology and for tests that
// wait until a control is enabled); dimmed: the native disabled state.
function setAvailability(button, unavailable, dimmed) {
  const state = String(unavailable || dimmed);
  if (button.getAttribute("aria-disabled") !== state) button.setAttribute("aria-disabled", state);
  if (button.disabled !== dimmed) button.disabled = dimmed;
}

function spaceMayPlay(target) {
  if (!target || target === document.body || target === document.documentElement) return true;
  const control = target.closest("button, a, input, select, textarea, summary, label, [tabindex], [contenteditable]");
  return !control && Boolean(target.closest(".player"));
}

function setPending(panel, pending) {
  if ((panel.dataset.pending === "true") !== pending) panel.dataset.pending = String(pending);
}

function isUpdate(phase) {
  return phase.kind.startsWith("update");
}

function emptyHistory() {
  return { steps: [], loss: [], accuracy: [], evalSteps: [], evalAccuracy: [] };
}

// Resolves in a task of its own just after the next frame (a timer set from the frame's
// callback), so that what follows is neither part of that frame's task nor of the next.
function afterFrame() {
  return new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function whenPlotlyLoaded() {
  if (window.Plotly) return Promise.resolve();
  return new Promise((resolve) => window.addEventListener("load", resolve, { once: true }));
}

whenPlotlyLoaded().then(() => {
  const app = new App();
  probe.app = app;
  app.start();
});
