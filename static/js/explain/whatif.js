// The inspector's two experiments on a clicked cell, both answered by the server without
// touching the session: a gradient check (the engine's central difference beside its
// analytic gradient) and a what-if (the same trace with one weight, one pixel or the label
// changed, compared layer by layer with the session's own trace).

import { api } from "../server/api.js";
import { formatNumber, formatPrecise } from "../format.js";
import { INPUT_LAYER, paramsOfLayer } from "../views/viewmodel.js";
import { el } from "../dom.js";

const EPSILONS = [1e-3, 1e-4, 1e-5, 1e-6];
const DEFAULT_EPSILON = 1e-4;
// Analytic (float32 engine) and numeric (float64) agree to about this relative difference.
const AGREEMENT = 1e-3;

const at = (array, key) => key.reduce((node, k) => node[k], array);

// What the clicked cell is, for the experiments: a weight or bias of a layer, an input
// pixel, or neither (only the label can be changed then).
export function experimentTarget(trace, index, view, cell) {
  if (index === INPUT_LAYER) return { kind: "input", key: [cell.map, cell.i, cell.j], label: `x[${cell.map},${cell.i},${cell.j}]` };
  const layer = trace.layers[index];
  if (!layer.params || layer.params.W === undefined) return null;
  if (view === "db") return { kind: "param", layer: index, param: "b", key: [cell.k], label: `${layer.name} b[${cell.k}]` };
  if (view === "W" || view === "dW" || view.startsWith("W-")) {
    const key = cell.f !== undefined ? [cell.f, cell.c, cell.r, cell.s] : [cell.u, cell.k];
    return { kind: "param", layer: index, param: "W", key, label: `${layer.name} W[${key.join(",")}]` };
  }
  return null;
}

// The value the session holds now: after a step, the weights the update left.
function sessionValue(record, target) {
  const after = record.step && target.kind === "param" && paramsOfLayer(record.step.params_after, target.layer);
  return after ? at(after[target.param], target.key) : currentValue(record.trace, target);
}

function currentValue(trace, target) {
  if (target.kind === "input") {
    const x = trace.input.length === 1 || Array.isArray(trace.input[0][0]) ? trace.input : [trace.input];
    return at(x, target.key);
  }
  return at(trace.layers[target.layer].params[target.param], target.key);
}

function classCount(trace) {
  const last = trace.layers[trace.layers.length - 1];
  return last.spec && last.spec.activation === "softmax" ? last.a.length : 0;
}

// ctx: {record, index, view, cell, sessionId, input, whatIf, onShow(answer, change, description, baseTrace), onClear()}
export function attachExperiments(container, ctx) {
  const slot = container.querySelector('[data-role="inspector-content"]');
  const trace = ctx.record.trace;
  const target = experimentTarget(trace, ctx.index, ctx.view, ctx.cell);
  const classes = classCount(trace);
  if (!target && !classes) return;
  const section = el("section", { className: "inspector-section inspector-experiments", "data-role": "experiments" });
  section.append(el("h3", { text: "Check it, or change it" }));
  if (ctx.whatIf) {
    section.append(el("p", { className: "whatif-note", text: `This cell is explained from the what-if trace (${ctx.whatIf.description}); the session's own weights are unchanged.` }));
  }
  if (target) section.append(gradcheckControl(ctx, target));
  section.append(whatIfControl(ctx, target, classes));
  slot.append(section);
}

function gradcheckControl(ctx, target) {
  const box = el("div", { className: "experiment", "data-role": "gradcheck" });
  const what = target.kind === "input" ? `dL/d${target.label}` : `dL/d${target.label.split(" ")[1]}`;
  box.append(el("p", { className: "inspector-explanation", text: `Gradient check: nudge ${target.label} by ±ε, run the network forward twice in float64 and compare the slope (L(+ε) − L(−ε)) / 2ε with the backward pass's ${what} for the traced sample.` + (ctx.record.step ? " It uses the session's weights now, after this step's update." : "") }));
  const epsilon = el("select", { "aria-label": "epsilon", "data-role": "gradcheck-epsilon" });
  for (const value of EPSILONS) epsilon.append(el("option", { value: String(value), text: `ε = ${value}` }));
  epsilon.value = String(DEFAULT_EPSILON);
  const run = el("button", { type: "button", "data-role": "gradcheck-run", text: "Check numerically" });
  const out = el("div", { className: "gradcheck-result", "data-role": "gradcheck-result", "aria-live": "polite" });
  run.addEventListener("click", async () => {
    run.disabled = true;
    out.replaceChildren(el("p", { className: "hint", text: "Running two forward passes…" }));
    const of = target.kind === "input" ? { input: target.key } : { layer: target.layer, param: target.param, index: target.key };
    try {
      const answer = await api.gradcheck(ctx.sessionId, ctx.input, ctx.whatIf ? ctx.whatIf.change : {}, of, Number(epsilon.value));
      out.replaceChildren(renderGradcheck(answer, what));
    } catch (error) {
      out.replaceChildren(el("p", { className: "whatif-error", text: `The check failed: ${error.message}` }));
    } finally {
      run.disabled = false;
    }
  });
  box.append(el("div", { className: "experiment-controls" }, epsilon, run), out);
  return box;
}

function renderGradcheck(answer, what) {
  const agree = answer.abs_error <= AGREEMENT * Math.max(Math.abs(answer.analytic), Math.abs(answer.numeric)) + 1e-7;
  const wrap = el("div", {});
  const list = el("dl", { className: "inspector-values" });
  const rows = [
    ["analytic (backward pass)", answer.analytic, "analytic"],
    ["numeric (L(+ε) − L(−ε)) / 2ε", answer.numeric, "numeric"],
    ["|difference|", answer.abs_error, "abs_error"],
    ["relative difference", answer.rel_error, "rel_error"],
    ["ε", answer.epsilon, "epsilon"],
    ["L(θ + ε)", answer.loss_plus, "loss_plus"],
    ["L(θ − ε)", answer.loss_minus, "loss_minus"],
  ];
  for (const [label, value, role] of rows) list.append(el("dt", { text: label }), el("dd", { "data-role": `gc-${role}`, "data-value": String(value), text: formatPrecise(value) }));
  wrap.append(list);
  const kinks = answer.kinks || [];
  const verdict = el("p", { className: `inspector-result ${agree ? "match" : "mismatch"}`, "data-role": "gradcheck-verdict", "data-agree": String(agree) });
  if (agree) {
    verdict.append(el("span", { className: "verdict", text: "✓ " }), el("span", { text: `they agree: the backward pass's ${what} is the slope of the loss.` }));
  } else if (kinks.length) {
    verdict.append(el("span", { className: "verdict", text: "≠ " }), el("span", { text: "they differ, and the engine found why: the loss has a corner within ±ε." }));
  } else {
    verdict.append(el("span", { className: "verdict", text: "✗ " }), el("span", { text: `they differ by more than float32 rounding explains (relative ${formatNumber(answer.rel_error)}).` }));
  }
  wrap.append(verdict);
  if (kinks.length) {
    const ul = el("ul", { className: "gradcheck-kinks", "data-role": "gradcheck-kinks" });
    for (const kink of kinks) ul.append(el("li", { text: kink.explanation }));
    wrap.append(ul);
    if (agree) wrap.append(el("p", { className: "hint", text: "A kink lies within ±ε, but here both sides have nearly the same slope." }));
    else wrap.append(el("p", { className: "hint", text: "A smaller ε usually moves the nudge off the corner; the analytic value is the slope on the side the trace took." }));
  }
  return wrap;
}

function whatIfControl(ctx, target, classes) {
  const box = el("div", { className: "experiment", "data-role": "whatif" });
  const trace = ctx.record.trace;
  // After a step the shown trace predates the update; the what-if compares with a fresh
  // trace of the weights the session holds now.
  const stale = Boolean(ctx.record.step) && !ctx.whatIf;
  const base = ctx.whatIf ? ctx.whatIf.baseTrace : trace;
  box.append(el("p", { className: "inspector-explanation", text: "What-if: trace the same input with a weight, a pixel or the label changed and see every layer recompute. Nothing is trained; the session keeps its weights until you press Step or Update." }));
  const controls = el("div", { className: "experiment-controls" });
  let valueInput = null;
  let original = null;
  // Pixels are sent as a 28×28 drawing; a preset's example input has its own size and target.
  if (target && target.kind === "input" && ctx.input && ctx.input.kind === "example") {
    box.append(el("p", { className: "hint", text: "The example's pixels are fixed by the preset; its weights can be changed from a W or b cell." }));
  } else if (target) {
    original = ctx.whatIf ? currentValue(base, target) : sessionValue(ctx.record, target);
    const shown = ctx.whatIf ? currentValue(trace, target) : original;
    valueInput = el("input", { type: "number", step: "any", "data-role": "whatif-value", "aria-label": `new value of ${target.label}`, value: String(Number(shown.toPrecision(6))) });
    if (target.kind === "input") {
      valueInput.min = "0";
      valueInput.max = "1";
    }
    const nudge = (sign) => {
      const step = target.kind === "input" ? 0.1 : Math.max(0.05, Math.abs(original) * 0.5);
      let next = Number(valueInput.value) + sign * step;
      if (target.kind === "input") next = Math.min(1, Math.max(0, next));
      valueInput.value = String(Number(next.toPrecision(6)));
    };
    const minus = el("button", { type: "button", className: "ghost", "data-role": "whatif-minus", "aria-label": "nudge down", text: "−" });
    const plus = el("button", { type: "button", className: "ghost", "data-role": "whatif-plus", "aria-label": "nudge up", text: "+" });
    minus.addEventListener("click", () => nudge(-1));
    plus.addEventListener("click", () => nudge(1));
    controls.append(el("label", { className: "whatif-field" }, el("span", { text: `${target.label} = ` }), valueInput), minus, plus);
    controls.append(el("span", { className: "hint", text: `(the session's: ${formatPrecise(original)})` }));
  }
  let labelSelect = null;
  if (classes) {
    labelSelect = el("select", { "data-role": "whatif-label", "aria-label": "label for the what-if" });
    for (let k = 0; k < classes; k++) labelSelect.append(el("option", { value: String(k), text: String(k) }));
    labelSelect.value = String(trace.label);
    controls.append(el("label", { className: "whatif-field" }, el("span", { text: "label " }), labelSelect));
  }
  const run = el("button", { type: "button", "data-role": "whatif-run", text: "Trace the what-if" });
  controls.append(run);
  box.append(controls);
  const out = el("div", { "data-role": "whatif-result", "aria-live": "polite" });
  box.append(out);
  run.addEventListener("click", async () => {
    // Changes add up: a what-if made while one is shown keeps the earlier changes (and
    // setting a value back to the session's removes its edit).
    const prior = ctx.whatIf ? ctx.whatIf.change : {};
    const change = { edits: [...(prior.edits || [])], label: prior.label, pixels: prior.pixels };
    if (valueInput) {
      const value = Number(valueInput.value);
      if (valueInput.value.trim() === "" || !Number.isFinite(value)) {
        out.replaceChildren(el("p", { className: "whatif-error", text: "Type a number for the new value." }));
        return;
      }
      if (target.kind === "input") {
        const pixels = structuredClone(change.pixels || basePixels(base));
        pixels[target.key[1]][target.key[2]] = Math.min(1, Math.max(0, value));
        change.pixels = pixels;
      } else {
        const same = (e) => e.layer === target.layer && e.param === target.param && e.index.join() === target.key.join();
        change.edits = change.edits.filter((e) => !same(e));
        if (value !== original) change.edits.push({ layer: target.layer, param: target.param, index: target.key, value });
      }
    }
    if (labelSelect) change.label = Number(labelSelect.value) !== Number(base.label) ? Number(labelSelect.value) : undefined;
    const said = describeChange(base, change);
    if (said.length === 0) {
      out.replaceChildren(el("p", { className: "hint", text: ctx.whatIf ? "That is the session's own trace: press Clear what-if to go back to it." : "Nothing changed yet: type a new value, nudge it, or pick another label." }));
      return;
    }
    if (!change.edits.length) delete change.edits;
    if (change.label === undefined) delete change.label;
    if (!change.pixels) delete change.pixels;
    run.disabled = true;
    try {
      const baseTrace = stale ? (await api.traceWhatIf(ctx.sessionId, ctx.input, {})).trace : base;
      const whatAnswer = await api.traceWhatIf(ctx.sessionId, ctx.input, change);
      const description = said.join(", ");
      out.replaceChildren(renderComparison(baseTrace, whatAnswer.trace, description, () => ctx.onShow(whatAnswer, change, description, baseTrace)));
    } catch (error) {
      out.replaceChildren(el("p", { className: "whatif-error", text: `The what-if failed: ${error.message}` }));
    } finally {
      run.disabled = false;
    }
  });
  if (ctx.whatIf) {
    const clear = el("button", { type: "button", className: "ghost", "data-role": "whatif-clear", text: "Clear the what-if" });
    clear.addEventListener("click", () => ctx.onClear());
    box.append(clear);
  }
  return box;
}

function basePixels(trace) {
  return trace.input.length === 1 && Array.isArray(trace.input[0][0]) ? trace.input[0] : trace.input;
}

// The changes in words, against the session's trace `base`.
function describeChange(base, change) {
  const said = [];
  for (const e of change.edits || []) said.push(`${base.layers[e.layer].name} ${e.param}[${e.index.join(",")}] = ${formatNumber(e.value)}`);
  if (change.pixels) {
    const original = basePixels(base);
    let moved = 0;
    change.pixels.forEach((line, i) => line.forEach((v, j) => (moved += v !== original[i][j] ? 1 : 0)));
    if (moved) said.push(`${moved} pixel${moved === 1 ? "" : "s"} redrawn`);
  }
  if (change.label !== undefined) said.push(`label ${change.label} instead of ${base.label}`);
  return said;
}

// Largest absolute difference between two nested arrays of the same shape, and how many
// elements differ.
function difference(a, b) {
  if (a == null || b == null) return null;
  if (!Array.isArray(a)) {
    const d = Math.abs(a - b);
    return { max: d, changed: d > 0 ? 1 : 0, count: 1 };
  }
  let max = 0;
  let changed = 0;
  let count = 0;
  for (let k = 0; k < a.length; k++) {
    const part = difference(a[k], b[k]);
    max = Math.max(max, part.max);
    changed += part.changed;
    count += part.count;
  }
  return { max, changed, count };
}

function predicted(trace) {
  const p = trace.prediction || [];
  let best = 0;
  for (let k = 1; k < p.length; k++) if (p[k] > p[best]) best = k;
  return { k: best, p: p[best] };
}

// One row per layer and quantity: how far the what-if moved it from the session's trace.
export function compareTraces(base, what) {
  const rows = [];
  rows.push({ what: "loss L", before: base.loss, after: what.loss, diff: difference(base.loss, what.loss) });
  for (let i = 0; i < base.layers.length; i++) {
    const b = base.layers[i];
    const w = what.layers[i];
    const weighted = b.grads && b.grads.W !== undefined;
    if (weighted) rows.push({ layer: b.name, what: "W", diff: difference(b.params.W, w.params.W) });
    for (const key of ["z", "a", "delta"]) {
      if (key === "z" && !weighted) continue;
      rows.push({ layer: b.name, what: key === "delta" ? "δ" : key, diff: difference(b[key], w[key]) });
    }
    if (weighted) rows.push({ layer: b.name, what: "dW", diff: difference(b.grads.W, w.grads.W) });
  }
  rows.push({ what: "dL/dx", diff: difference(base.input_grad, what.input_grad) });
  return rows;
}

function renderComparison(base, what, description, onShow) {
  const wrap = el("div", { className: "whatif-comparison" });
  const before = predicted(base);
  const after = predicted(what);
  const summary = el("p", { className: "whatif-summary", "data-role": "whatif-loss", "data-before": String(base.loss), "data-after": String(what.loss) });
  summary.append(
    el("strong", { text: "What-if " }),
    el("span", { text: `(${description}): loss ${formatPrecise(base.loss)} → ${formatPrecise(what.loss)}` }),
    el("span", { text: `; predicted ${before.k} (p ${formatNumber(before.p)}) → ${after.k} (p ${formatNumber(after.p)}).` }),
  );
  wrap.append(summary);
  const table = el("table", { className: "terms-table whatif-table", "data-role": "whatif-table" });
  const head = el("tr");
  for (const name of ["layer", "", "largest change", "cells changed"]) head.append(el("th", { scope: "col", text: name }));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  for (const row of compareTraces(base, what)) {
    if (!row.diff) continue;
    const changed = row.diff.changed > 0;
    body.append(
      el(
        "tr",
        { className: changed ? "changed" : "", "data-changed": String(changed) },
        el("td", { text: row.layer || "" }),
        el("td", { text: row.what }),
        el("td", { className: "num", text: changed ? formatNumber(row.diff.max) : "—" }),
        el("td", { className: "num", text: `${row.diff.changed} / ${row.diff.count}` }),
      ),
    );
  }
  table.append(body);
  wrap.append(el("p", { className: "hint", text: "Forward from the change: z → a → loss; then backward: δ → dW. Rows that moved are highlighted; those before the change stay put." }));
  wrap.append(el("div", { className: "table-scroll" }, table));
  const show = el("button", { type: "button", "data-role": "whatif-show", text: "Show the what-if in the strip" });
  show.addEventListener("click", onShow);
  wrap.append(show);
  return wrap;
}

// The banner over the strip while it shows a what-if trace: what was changed and how to go
// back to the session's own trace.
export function showWhatIfBanner(description, onClear) {
  let banner = document.getElementById("whatif-banner");
  if (!banner) {
    banner = el("div", { id: "whatif-banner", className: "whatif-banner", role: "status" });
    const strip = document.getElementById("strip");
    strip.parentElement.insertBefore(banner, strip);
  }
  const clear = el("button", { type: "button", "data-role": "whatif-clear-banner", text: "Clear what-if" });
  clear.addEventListener("click", onClear);
  banner.replaceChildren(
    el("strong", { text: "What-if: " }),
    el("span", { "data-role": "whatif-description", text: `${description}. Every map below is this hypothetical trace; the session's weights are unchanged until you press Step or Update. ` }),
    clear,
  );
  banner.hidden = false;
}

export function hideWhatIfBanner() {
  const banner = document.getElementById("whatif-banner");
  if (banner) banner.hidden = true;
}
