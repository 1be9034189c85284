// The arithmetic behind one number of the trace, laid out for the inspector: the terms
// (pairs of engine values and their product), their sum, and the engine's own value for
// comparison. Every operand is read from the trace; the only computation here is the
// products and the sum being displayed (and g'(z) from the engine's z and a).

import { asChannels, paramsOfLayer } from "../views/viewmodel.js";
import { COLORS } from "../config.js";
import { idx, layerInput, geometry, compare, sumTerms, paddedCell, kernelIndex } from "./terms.js";
import { convGather, convScatter, scatterPictures, poolRouting, denseColumn, convWeightPicture, biasPicture, PICTURES_SHOWN } from "./backward.js";

// z of a conv output element: the receptive-field patch times the kernel, plus the bias.
// The patch grids show each channel's padded window (zeros, or the wrapped input with
// circular padding) and the kernel as the forward pass applies it (rotated 180° for a true
// convolution).
function convForward(trace, index, f, i, j) {
  const layer = trace.layers[index];
  const x = layerInput(trace, index);
  const W = layer.params.W;
  const b = layer.params.b[f];
  const geo = geometry(layer);
  const { kernel, stride, padding } = geo;
  const rows = [];
  const grids = [];
  for (let c = 0; c < W[f].length; c++) {
    const xGrid = [];
    const kGrid = [];
    for (let r = 0; r < kernel[0]; r++) {
      const xLine = [];
      const kLine = [];
      for (let s = 0; s < kernel[1]; s++) {
        const row = i * stride[0] + r - padding[0];
        const col = j * stride[1] + s - padding[1];
        const cell = paddedCell(x[c], row, col, geo.circular);
        const [kr, ks] = kernelIndex(geo, r, s);
        const wv = W[f][c][kr][ks];
        const source = cell.kind === "pad" ? `pad${idx(c, row, col)}` : `x${idx(c, cell.row, cell.col)}`;
        rows.push({ a: source, av: cell.value, b: `W${idx(f, c, kr, ks)}`, bv: wv, product: cell.value * wv, padding: cell.kind !== "" });
        xLine.push({ v: cell.value, kind: cell.kind, title: cell.kind === "wrap" ? `wraps around to x${idx(c, cell.row, cell.col)}` : source });
        kLine.push({ v: wv, kind: "", title: `W${idx(f, c, kr, ks)}` });
      }
      xGrid.push(xLine);
      kGrid.push(kLine);
    }
    grids.push({ x: xGrid, k: kGrid });
  }
  const { total, scale } = sumTerms(rows);
  const padded = rows.some((r) => r.padding);
  return {
    heading: `${layer.name}: z${idx(f, i, j)} = Σ x·W + b`,
    explanation:
      `The ${kernel[0]}×${kernel[1]} receptive field of output (${i}, ${j}) starts at input row ${i}·${stride[0]}−${padding[0]}, ` +
      `column ${j}·${stride[1]}−${padding[1]} in each of the ${W[f].length} input channel(s); every input value is ` +
      `multiplied by the kernel weight at the same place, the products are summed and the bias b[${f}] is added.` +
      (geo.convolution ? ` This layer computes the true convolution: the kernel is rotated 180° before it slides, so window cell (r, s) meets W[${f}, c, ${kernel[0] - 1}−r, ${kernel[1] - 1}−s].` : "") +
      (padded ? (geo.circular ? " Cells outside the input wrap around to the opposite edge (circular padding, shaded)." : " Cells outside the input are zero padding.") : ""),
    columns: ["input x", "value", "kernel W", "weight", "product"],
    rows,
    patch: { channels: W[f].length, grids, f, i, j, kernel, stride, padding, rotated: geo.convolution },
    bias: { label: `b[${f}]`, value: b },
    result: { label: `z${idx(f, i, j)}`, ...compare(total + b, layer.z[f][i][j], scale + Math.abs(b)) },
  };
}

// z of a dense unit: previous activations times the unit's weight row, plus the bias.
function denseForward(trace, index, u) {
  const layer = trace.layers[index];
  const x = layerInput(trace, index);
  const W = layer.params.W;
  const b = layer.params.b[u];
  const rows = x.map((xv, k) => ({ a: `a_prev[${k}]`, av: xv, b: `W${idx(u, k)}`, bv: W[u][k], product: xv * W[u][k] }));
  const { total, scale } = sumTerms(rows);
  return {
    heading: `${layer.name}: z[${u}] = Σ a_prev·W + b`,
    explanation: `Unit ${u} multiplies each of the ${x.length} inputs by its weight W[${u}, k], sums the products and adds b[${u}].`,
    columns: ["input", "value", "weight", "weight value", "product"],
    rows,
    bias: { label: `b[${u}]`, value: b },
    result: { label: `z[${u}]`, ...compare(total + b, layer.z[u], scale + Math.abs(b)) },
  };
}

function poolForward(trace, index, c, i, j) {
  const layer = trace.layers[index];
  const x = layerInput(trace, index);
  const { kernel, stride } = geometry(layer);
  const winner = layer.argmax ? layer.argmax[c][i][j] : null;
  const planeW = x[c][0].length;
  const rows = [];
  for (let r = 0; r < kernel[0]; r++) {
    for (let s = 0; s < kernel[1]; s++) {
      const row = i * stride[0] + r;
      const col = j * stride[1] + s;
      rows.push({ a: `x${idx(c, row, col)}`, av: x[c][row][col], winner: winner === row * planeW + col, row, col });
    }
  }
  const engine = layer.a[c][i][j];
  if (layer.type === "maxpool") {
    const win = rows.find((r) => r.winner);
    return {
      heading: `${layer.name}: max over the ${kernel[0]}×${kernel[1]} window`,
      explanation:
        `Output (${i}, ${j}) of channel ${c} is the largest value of its window; the engine recorded the winner at ` +
        `input (${win ? win.row : "?"}, ${win ? win.col : "?"}) (flat index ${winner}). Backward, this output's delta goes to that input only.`,
      window: { rows, kernel },
      result: { label: `a${idx(c, i, j)}`, ...compare(win ? win.av : NaN, engine, Math.abs(engine)) },
    };
  }
  const area = kernel[0] * kernel[1];
  const { total, scale } = sumTerms(rows.map((r) => ({ product: r.av })));
  return {
    heading: `${layer.name}: mean of the ${kernel[0]}×${kernel[1]} window`,
    explanation: `Output (${i}, ${j}) of channel ${c} is the sum of its window divided by ${area}.`,
    window: { rows, kernel },
    divisor: area,
    result: { label: `a${idx(c, i, j)}`, ...compare(total / area, engine, scale / area) },
  };
}

function flattenForward(trace, index, k) {
  const layer = trace.layers[index];
  const x = layerInput(trace, index);
  const [C, H, W] = [x.length, x[0].length, x[0][0].length];
  const c = Math.floor(k / (H * W));
  const i = Math.floor((k % (H * W)) / W);
  const j = k % W;
  return {
    heading: `${layer.name}: a[${k}] = x[${c},${i},${j}]`,
    explanation: `Flatten reads the ${C}×${H}×${W} input in channel, row, column order: element ${k} = ${c}·${H * W} + ${i}·${W} + ${j}.`,
    result: { label: `a[${k}]`, ...compare(x[c][i][j], layer.a[k], Math.abs(layer.a[k])) },
  };
}

// Activation derivative from the engine's z and a (what the notes call g'(z)).
export function activationDerivative(activation, z, a) {
  switch (activation) {
    case "relu":
      return { value: z > 0 ? 1 : 0, formula: `relu'(z) = ${z > 0 ? "1 (z > 0)" : "0 (z ≤ 0)"}` };
    case "leaky_relu":
      return { value: z > 0 ? 1 : 0.01, formula: `leaky_relu'(z) = ${z > 0 ? "1 (z > 0)" : "0.01 (z ≤ 0)"}` };
    case "sigmoid":
      return { value: a * (1 - a), formula: "σ'(z) = a·(1 − a)" };
    case "tanh":
      return { value: 1 - a * a, formula: "tanh'(z) = 1 − a²" };
    default:
      return { value: 1, formula: "identity'(z) = 1" };
  }
}

// Contributions to dL/d(input of layer m) at one input element, from layer m's delta.
// `element` is [c, i, j] for map inputs and [k] for vector inputs.
function backwardTerms(trace, m, element) {
  const layer = trace.layers[m];
  const delta = layer.delta;
  if (layer.type === "dense") {
    const [k] = element;
    const W = layer.params.W;
    return {
      how: `through ${layer.name}: dL/da_prev[${k}] = Σ_u δ[u]·W[u, ${k}] (the transposed weights carry the deltas back)`,
      rows: delta.map((d, u) => ({ a: `δ_${layer.name}[${u}]`, av: d, b: `W${idx(u, k)}`, bv: W[u][k], product: d * W[u][k] })),
    };
  }
  if (layer.type === "flatten") {
    const [c, i, j] = element;
    const shape = layer.input_shape;
    const k = c * shape[1] * shape[2] + i * shape[2] + j;
    return {
      how: `through ${layer.name}: the element sits at position ${k} of the flattened vector, so its gradient is δ_${layer.name}[${k}]`,
      rows: [{ a: `δ_${layer.name}[${k}]`, av: delta[k], b: "routing", bv: 1, product: delta[k] }],
    };
  }
  if (layer.type === "maxpool") {
    const [c, i, j] = element;
    const planeW = layer.input_shape[layer.input_shape.length - 1];
    const flat = i * planeW + j;
    const rows = [];
    layer.argmax[c].forEach((line, oi) =>
      line.forEach((winner, oj) => {
        if (winner === flat) rows.push({ a: `δ_${layer.name}${idx(c, oi, oj)}`, av: delta[c][oi][oj], b: "winner", bv: 1, product: delta[c][oi][oj] });
      }),
    );
    return {
      how:
        rows.length > 0
          ? `through ${layer.name}: this input won its max-pool window, so the window's delta is routed to it unchanged`
          : `through ${layer.name}: this input did not win any max-pool window, so no gradient reaches it (0)`,
      rows,
    };
  }
  if (layer.type === "avgpool") {
    const [c, i, j] = element;
    const { kernel, stride } = geometry(layer);
    const area = kernel[0] * kernel[1];
    const rows = [];
    delta[c].forEach((line, oi) =>
      line.forEach((d, oj) => {
        const inside = i >= oi * stride[0] && i < oi * stride[0] + kernel[0] && j >= oj * stride[1] && j < oj * stride[1] + kernel[1];
        if (inside) rows.push({ a: `δ_${layer.name}${idx(c, oi, oj)}`, av: d, b: `1/${area}`, bv: 1 / area, product: d / area });
      }),
    );
    return { how: `through ${layer.name}: each window spreads its delta evenly, δ/${area}, over its ${area} inputs`, rows };
  }
  // conv: the full convolution of the delta with the 180°-rotated kernel, written as the
  // sum over every output position whose receptive field covers this input (convScatter
  // walks those positions, wrap-around included).
  const { contributions } = convScatter(trace, m, element);
  const geo = geometry(layer);
  const rows = contributions.map((t) => ({ a: `δ_${layer.name}${idx(t.f, t.oi, t.oj)}`, av: t.delta, b: `W${idx(t.f, element[0], t.kr, t.ks)}`, bv: t.weight, product: t.delta * t.weight }));
  return {
    how:
      `through ${layer.name}: the full convolution of its delta with the 180°-rotated kernel` +
      (geo.stride[0] > 1 || geo.stride[1] > 1 ? " (delta dilated by the stride)" : "") +
      ` — every output whose receptive field covers input (${element[1]}, ${element[2]}) sends back δ·W`,
    rows,
  };
}

// Delta of a layer element: where it came from (the next layer's backward terms, or the
// loss at the output) and the activation derivative.
function deltaExplanation(trace, index, element, context) {
  const layer = trace.layers[index];
  const at = (array) => element.reduce((node, k) => node[k], array);
  const engineDelta = at(layer.delta);
  const label = `δ_${layer.name}${idx(...element)}`;
  const last = index === trace.layers.length - 1;
  const activation = layer.spec && layer.spec.activation;
  if (last && layer.grad_a == null) {
    const [k] = element;
    const a = at(layer.a);
    const target = targetValue(trace, k);
    const n = context.batchSize || 1;
    return [{
      heading: `${label}: the output delta`,
      explanation:
        `${activation === "softmax" ? "Softmax with cross-entropy" : "Sigmoid with binary cross-entropy"}: the activation's ` +
        `derivative cancels the log's, leaving δ = (a − y) / N, with N = ${n} sample(s) in the batch the loss averages over.`,
      rows: [
        { a: `a[${k}]`, av: a, b: "", bv: null, product: a },
        { a: `−y[${k}]`, av: -target, b: "", bv: null, product: -target },
      ],
      columns: ["term", "value", "", "", "contribution"],
      divisor: n,
      result: { label, ...compare((a - target) / n, engineDelta, (Math.abs(a) + Math.abs(target)) / n) },
    }];
  }
  let how;
  let rows;
  let divisor = null;
  if (last) {
    // Mean squared error: dL/da = (a − y) / N, then through the activation below.
    const [k] = element;
    const a = at(layer.a);
    const target = targetValue(trace, k);
    divisor = context.batchSize || 1;
    how = `at the output, from the mean squared error: dL/da = (a − y) / N with N = ${divisor}`;
    rows = [
      { a: `a[${k}]`, av: a, b: "", bv: null, product: a / divisor },
      { a: `−y[${k}]`, av: -target, b: "", bv: null, product: -target / divisor },
    ];
  } else {
    const terms = backwardTerms(trace, index + 1, element);
    how = terms.how;
    rows = terms.rows;
  }
  const { total, scale } = sumTerms(rows);
  const engineGradA = layer.grad_a != null ? at(layer.grad_a) : engineDelta;
  const section = {
    heading: `${label}: where it came from`,
    explanation: `dL/da${idx(...element)} arrives ${how}.`,
    columns: ["delta", "value", "weight", "weight value", "product"],
    rows,
    result: { label: `dL/da${idx(...element)}`, ...compare(total, engineGradA, scale) },
  };
  if (divisor) {
    section.columns = ["term", "value", "", "", "term / N"];
    section.divisor = divisor;
  }
  const extra = last ? [] : attachBackwardPictures(section, trace, index + 1, element, engineGradA);
  if (layer.type === "conv" || layer.type === "dense") {
    const z = at(layer.z);
    const a = at(layer.a);
    const derivative = activationDerivative(activation, z, a);
    section.activation = {
      formula: derivative.formula,
      z,
      a,
      derivative: derivative.value,
      gradA: engineGradA,
      delta: compare(engineGradA * derivative.value, engineDelta, Math.abs(engineGradA)),
      label,
    };
  }
  return [section, ...extra];
}

// Pictures of the step back through layer m to element `element` of its input, attached to
// the section that tells it; for a conv layer also the second reading (scatter) as a section
// of its own, with its own check against the engine.
function attachBackwardPictures(section, trace, m, element, engineGradA) {
  const next = trace.layers[m];
  const gradLabel = section.result.label;
  if (next.type === "conv") {
    const gather = convGather(trace, m, element);
    const { groups, contributions } = convScatter(trace, m, element);
    if (gather) {
      section.pictures = gather.pictures;
      // Reading 1's own sum is the one checked here; reading 2 checks the scatter's.
      section.result = { label: gradLabel, ...compare(gather.pictures.total, engineGradA, gather.scale) };
      section.marks = gather.marks;
    } else {
      section.marks = [{ index: m, views: ["delta"], cells: groups.map((g) => ({ map: g.f, i: g.oi, j: g.oj })), color: COLORS.winner }];
    }
    const { total, scale } = sumTerms(contributions.map((t) => ({ product: t.delta * t.weight })));
    const pictures = scatterPictures(trace, m, element, groups);
    return [
      {
        heading: `Reading 2 — scatter: the same numbers, seen from ${next.name}'s deltas`,
        explanation:
          `Each δ cell of ${next.name} sends δ·W back over the ${geometry(next).kernel.join("×")} window it was computed from; ` +
          `this cell (outlined) collects one product from each of the ${groups.length} windows that cover it` +
          (geometry(next).circular ? " (with circular padding also from windows that wrap around the edge)" : "") +
          `. Reading 1 slides the rotated kernel over the deltas; reading 2 stamps each δ·W back — the same ${contributions.length} products.` +
          (pictures.length > PICTURES_SHOWN ? ` The ${PICTURES_SHOWN} largest are drawn.` : ""),
        pictures: { shown: pictures.slice(0, PICTURES_SHOWN), more: pictures.length - PICTURES_SHOWN },
        result: { label: gradLabel, ...compare(total, engineGradA, scale) },
        reading: "scatter",
      },
    ];
  }
  if (next.type === "maxpool" || next.type === "avgpool") {
    const routing = poolRouting(trace, m, element);
    section.pictures = routing.pictures;
    section.marks = routing.marks;
  } else if (next.type === "dense") {
    const column = denseColumn(trace, m, element[0]);
    section.pictures = column.pictures;
  }
  return [];
}

// The API's target: a class index (cross-entropy) or the target vector (binary, mse).
function targetValue(trace, k) {
  const target = trace.target ?? trace.label;
  if (Array.isArray(target)) return target[k];
  return Number(target) === k ? 1 : 0;
}

function inputGradExplanation(trace, element) {
  const terms = backwardTerms(trace, 0, element);
  const { total, scale } = sumTerms(terms.rows);
  const grad = asChannels(trace.input_grad);
  const engine = element.reduce((node, k) => node[k], grad);
  const section = {
    heading: `dL/dx${idx(...element)}: the saliency of this input pixel`,
    explanation: `The input gradient arrives ${terms.how}.`,
    columns: ["delta", "value", "weight", "weight value", "product"],
    rows: terms.rows,
    result: { label: `dL/dx${idx(...element)}`, ...compare(total, engine, scale) },
  };
  return [section, ...attachBackwardPictures(section, trace, 0, element, engine)];
}

function convWeightGrad(trace, index, f, c, r, s, context) {
  const layer = trace.layers[index];
  const picture = convWeightPicture(trace, index, f, c, r, s);
  const geo = geometry(layer);
  const [wr, ws] = kernelIndex(geo, r, s);
  const { total, scale } = sumTerms(picture.rows);
  return {
    heading: `${layer.name}: dL/dW${idx(f, c, r, s)} = Σ x·δ`,
    explanation:
      `The weight W[${f},${c},${r},${s}] met input x[${c}, i·${geo.stride[0]}+${wr}−${geo.padding[0]}, j·${geo.stride[1]}+${ws}−${geo.padding[1]}] ` +
      `at every output (i, j) of filter ${f}` +
      (geo.convolution ? ` (window cell (${wr}, ${ws}): the true convolution rotates the kernel)` : "") +
      `; its gradient is the correlation of the input with the delta: the input plane shifted by (${wr}, ${ws}) times filter ${f}'s delta map, cell by cell, summed.`,
    columns: ["input x", "value", "delta", "delta value", "product"],
    rows: picture.rows,
    pictures: picture.pictures,
    marks: picture.marks,
    batch: batchGradient(context, index, "W", [f, c, r, s]),
    result: { label: `dW${idx(f, c, r, s)}`, ...compare(total, layer.grads.W[f][c][r][s], scale) },
  };
}

// The gradient the update applied (the mini-batch mean), beside the traced sample's own.
function batchGradient(context, index, param, key) {
  const step = context && context.step;
  if (context.gradients === "sample") return null; // the "this image only" toggle
  const grads = step && paramsOfLayer(step.batch_grads, index);
  if (!grads) return null;
  const value = key.reduce((node, k) => node[k], grads[param]);
  const count = step.batch_indices ? step.batch_indices.length : step.batch_size;
  return { value, count, label: `d${param}${idx(...key)}` };
}

function denseWeightGrad(trace, index, u, k, context) {
  const layer = trace.layers[index];
  const x = layerInput(trace, index);
  const rows = [{ a: `a_prev[${k}]`, av: x[k], b: `δ[${u}]`, bv: layer.delta[u], product: x[k] * layer.delta[u] }];
  return {
    heading: `${layer.name}: dL/dW${idx(u, k)} = a_prev[${k}]·δ[${u}]`,
    explanation: `W[${u}, ${k}] multiplied input ${k} into unit ${u}, so its gradient is that input times the unit's delta.`,
    columns: ["input", "value", "delta", "delta value", "product"],
    rows,
    batch: batchGradient(context, index, "W", [u, k]),
    result: { label: `dW${idx(u, k)}`, ...compare(rows[0].product, layer.grads.W[u][k], Math.abs(rows[0].product)) },
  };
}

function biasGrad(trace, index, f, context) {
  const layer = trace.layers[index];
  const delta = layer.delta[f];
  const rows = Array.isArray(delta)
    ? delta.flatMap((line, oi) => line.map((d, oj) => ({ a: `δ${idx(f, oi, oj)}`, av: d, b: "", bv: null, product: d })))
    : [{ a: `δ[${f}]`, av: delta, b: "", bv: null, product: delta }];
  const { total, scale } = sumTerms(rows);
  return {
    heading: `${layer.name}: dL/db[${f}] = Σ δ`,
    explanation: `The bias is added to every output of ${layer.type === "conv" ? `filter ${f}` : `unit ${f}`}, so its gradient is the sum of their deltas.`,
    columns: ["delta", "value", "", "", "term"],
    rows,
    ...(biasPicture(trace, index, f) || {}),
    batch: batchGradient(context, index, "b", [f]),
    result: { label: `db[${f}]`, ...compare(total, layer.grads.b[f], scale) },
  };
}

function weightStory(record, index, cell, view) {
  const layer = record.trace.layers[index];
  const key = cell.f !== undefined ? [cell.f, cell.c, cell.r, cell.s] : [cell.u, cell.k];
  const at = (array) => key.reduce((node, k) => node[k], array);
  const section = {
    heading: `${layer.name}: W${idx(...key)}`,
    explanation: "A weight of the network.",
    values: [{ label: `W${idx(...key)} at trace time`, value: at(layer.params.W) }],
  };
  const step = record.step;
  const before = step && paramsOfLayer(step.params_before, index);
  const after = step && paramsOfLayer(step.params_after, index);
  if (before && after) {
    const batchGrads = paramsOfLayer(step.batch_grads, index);
    const lr = step.learning_rate;
    const wBefore = at(before.W);
    const wAfter = at(after.W);
    section.values = [{ label: "before the update", value: wBefore }];
    if (batchGrads) {
      const g = at(batchGrads.W);
      section.values.push({ label: `batch gradient dL/dW (mean over ${step.batch_indices ? step.batch_indices.length : "the"} samples)`, value: g });
      section.values.push({ label: `−lr·gradient (lr = ${lr})`, value: -lr * g });
    }
    section.values.push({ label: `actual update (after − before), ${step.optimizer || "sgd"}`, value: wAfter - wBefore });
    section.values.push({ label: "after the update", value: wAfter });
    section.explanation =
      (step.optimizer || "sgd") === "sgd"
        ? "Plain SGD moves each weight by −lr times its gradient over the mini-batch."
        : `${step.optimizer} moves each weight by an amount built from running averages of past gradients, so the update differs from −lr·gradient.`;
  }
  if (view === "W-change" || view === "W-before" || view === "W-after") section.heading += " — the update";
  return section;
}

// a[k] of a softmax layer from every z of the layer: exp(z_j − max z), their sum, and the
// quotient next to the engine's a[k]. Subtracting max z changes no quotient; it keeps exp finite.
function softmaxStory(layer, k) {
  const z = layer.z;
  const maxZ = Math.max(...z);
  const rows = z.map((value, j) => ({ j, z: value, shifted: value - maxZ, exp: Math.exp(value - maxZ) }));
  let sum = 0;
  for (const row of rows) sum += row.exp;
  const computed = rows[k].exp / sum;
  return {
    heading: `then the activation: a = softmax(z)`,
    explanation:
      `Softmax turns all ${z.length} z of ${layer.name} into probabilities: a[k] = exp(z[k] − max z) / Σ_j exp(z[j] − max z). ` +
      "Subtracting max z changes no quotient (it cancels), but keeps exp from overflowing.",
    softmax: { k, rows, maxZ, sum, label: `a[${k}]`, ...compare(computed, layer.a[k], 0) },
  };
}

// When the page shows the gradient the update applied (context.gradients "batch"), that mean
// over the mini-batch comes first, next to this image's own; the sum of products below it is
// this image's own, one of the batch's terms.
// The inspector's story for a clicked cell: a list of sections.
export function explainCell(record, index, view, cell, context = {}) {
  const trace = record.trace;
  context = { step: record.step, ...context };
  if (index === -1) {
    const element = [cell.map, cell.i, cell.j];
    if (view === "delta") return inputGradExplanation(trace, element);
    const x = asChannels(trace.input);
    return [{ heading: `x${idx(...element)}`, explanation: "An input pixel, in [0, 1] (MNIST-style: the digit light on dark).", values: [{ label: "value", value: x[cell.map][cell.i][cell.j] }] }];
  }
  const layer = trace.layers[index];
  const element = cell.k !== undefined && cell.u === undefined ? [cell.k] : [cell.map, cell.i, cell.j];
  switch (view) {
    case "z":
    case "a": {
      const sections = [];
      if (layer.type === "conv") sections.push(convForward(trace, index, cell.map, cell.i, cell.j));
      else if (layer.type === "dense") sections.push(denseForward(trace, index, cell.k));
      else if (layer.type === "maxpool" || layer.type === "avgpool") sections.push(poolForward(trace, index, cell.map, cell.i, cell.j));
      else if (layer.type === "flatten") sections.push(flattenForward(trace, index, cell.k));
      if (view === "a" && (layer.type === "conv" || layer.type === "dense")) {
        const at = (array) => element.reduce((node, k) => node[k], array);
        const activation = layer.spec && layer.spec.activation;
        if (activation === "softmax") {
          sections.push(softmaxStory(layer, cell.k));
          return sections;
        }
        sections.push({
          heading: `then the activation: a = ${activation}(z)`,
          explanation: activation === "softmax" ? "Softmax normalises the exponentials of all z of this layer so the outputs sum to 1." : `${activation} is applied to z element by element.`,
          values: [
            { label: `z${idx(...element)}`, value: at(layer.z) },
            { label: `a${idx(...element)} = ${activation}(z)`, value: at(layer.a) },
          ],
        });
      }
      return sections;
    }
    case "delta":
      return deltaExplanation(trace, index, element, context);
    case "dW":
      if (layer.type === "conv") return [convWeightGrad(trace, index, cell.f, cell.c, cell.r, cell.s, context)];
      return [denseWeightGrad(trace, index, cell.u, cell.k, context)];
    case "db":
      return [biasGrad(trace, index, cell.k, context)];
    default:
      return [weightStory(record, index, cell, view)];
  }
}
