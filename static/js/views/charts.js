// The charts beside the strip: the prediction bars, the dL/dx saliency over the input,
// and the loss and accuracy curves that grow while training.

import { COLORS, DIVERGING_SCALE, GREY_SCALE } from "../config.js";
import { asChannels, argmaxIndex, colourRange } from "./viewmodel.js";
import { formatNumber } from "../format.js";
import { bmpDataUrl, colourLookup, colourStep, drawColourBar } from "./pictures.js";

const PLOT_CONFIG = { displayModeBar: false, responsive: true, doubleClick: false, scrollZoom: false };
const FONT = { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 11, color: "#1d2433" };

// Live training redraws the prediction and the curves five times a second. A Plotly.react
// with new data lays out and draws the whole figure again (axes, tick labels, legend, text),
// about 15-25 ms a chart; while nothing but the traces' values changed, Plotly.animate with
// redraw: false moves just the traces (bars, lines) to their new values, about half of that.
// A figure records what its last full draw fixed (`element.liveShape`); when that no longer
// fits (another class count, the curves outgrowing their axes), the next draw is a full one.
const MOVE_TRACES = { transition: { duration: 0 }, frame: { duration: 0, redraw: false }, mode: "immediate" };

// layout: new axis ranges, if any (the axes are drawn again, the rest of the figure is not).
function moveTraces(element, data, traces, layout = undefined) {
  return window.Plotly.animate(element, layout ? { data, traces, layout } : { data, traces }, MOVE_TRACES);
}

function sameShape(a, b) {
  return a != null && b != null && Object.keys(b).every((key) => a[key] === b[key]);
}

// live: while live training plays, the bars move without their value labels and tags (a
// number that changes five times a second is not read); the next draw that is not live puts
// them back.
export function drawPrediction(element, trace, { live = false } = {}) {
  const output = trace.prediction || trace.layers[trace.layers.length - 1].a;
  const units = output.length;
  const binary = units === 1;
  const probabilities = binary ? [1 - output[0], output[0]] : output;
  const classes = probabilities.map((_, k) => String(k));
  const target = Array.isArray(trace.target) ? trace.target : null;
  const label = binary ? (target ? (target[0] >= 0.5 ? 1 : 0) : Number(trace.target)) : Number(trace.label);
  const predicted = argmaxIndex(probabilities);
  const colors = probabilities.map((_, k) =>
    k === label ? COLORS.label : k === predicted ? COLORS.wrong : COLORS.neutral,
  );
  const summary = {
    predicted,
    label,
    binary,
    probability: output[0],
    confidence: probabilities[predicted],
    labelProbability: probabilities[label],
  };
  const shape = { live, units };
  if (live && sameShape(element.liveShape, shape)) {
    // A move does not repaint the bars' colours: when the prediction changes class, a restyle
    // of the colours follows (a style-only edit: no calc, no axes).
    const recoloured = String(element.data[0].marker.color) !== String(colors);
    const moved = moveTraces(element, [{ y: probabilities }], [0]);
    return (recoloured ? moved.then(() => window.Plotly.restyle(element, { "marker.color": [colors] }, [0])) : moved).then(() => summary);
  }
  element.liveShape = shape;
  const data = [
    {
      type: "bar",
      x: classes,
      y: probabilities,
      marker: { color: colors },
      text: live ? undefined : probabilities.map((p) => (p >= 0.01 ? p.toFixed(2) : "")),
      textposition: "outside",
      cliponaxis: false,
      hovertemplate: "class %{x}: %{y:.4f}<extra></extra>",
    },
  ];
  const annotations = live ? [] : [{ x: String(label), y: probabilities[label], text: "label", showarrow: false, yshift: 22, font: { size: 10, color: COLORS.label } }];
  if (!live && predicted !== label) {
    const crowded = Math.abs(predicted - label) === 1;
    annotations.push({ x: String(predicted), y: probabilities[predicted], text: "predicted", showarrow: false, yshift: crowded && probabilities[predicted] <= probabilities[label] + 0.1 ? 34 : 22, font: { size: 10, color: COLORS.wrong } });
  }
  const layout = {
    height: 215,
    annotations,
    // room above the bars for the "label" / "predicted" tags of a bar at p = 1
    margin: { l: 34, r: 8, t: 40, b: 30 },
    font: FONT,
    xaxis: { title: { text: binary ? "class (sigmoid output = P(1))" : "class", standoff: 4 }, type: "category", fixedrange: true },
    yaxis: { range: [0, 1.12], fixedrange: true, tickformat: ".1f", title: { text: "probability", standoff: 2 } },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    bargap: 0.25,
  };
  return window.Plotly.react(element, data, layout, PLOT_CONFIG).then(() => summary);
}

// The saliency: the input in grey with dL/dx over it on the diverging scale, SALIENCY_OPACITY
// opaque, made here into one picture (the colour steps the strip's maps use) and shown as the
// figure's only layout image, with an HTML colour bar of dL/dx under it (`colourBar`). A new
// trace changes only the picture's source, a relayout of one attribute (about 1 ms), where
// the two heatmap traces it replaces were laid out and drawn again on every step (about 20 ms,
// the longest task of live training). The numbers under the pointer are shown by
// `showSaliencyCell` from the arrays the element keeps.
const SALIENCY_OPACITY = 0.72;
const SALIENCY_BOX_PX = 182; // the picture's longer side
const SALIENCY_MARGIN_PX = 4;

export function drawSaliency(element, trace, colourBar) {
  const input = asChannels(trace.input)[0];
  const grad = asChannels(trace.input_grad)[0];
  const height = input.length;
  const width = input[0].length;
  const range = colourRange(grad.flat(), true);
  const [lo, hi] = range;
  const grey = colourLookup(GREY_SCALE);
  const diverging = colourLookup(DIVERGING_SCALE);
  const pixels = new Uint8ClampedArray(width * height * 4);
  for (let r = 0; r < height; r++) {
    for (let c = 0; c < width; c++) {
      const p = (r * width + c) * 4;
      const g = Number.isFinite(input[r][c]) ? colourStep(input[r][c], 0, 1) * 3 : 0;
      const value = grad[r][c];
      const t = Number.isFinite(value) ? colourStep(value, lo, hi - lo) * 3 : -1;
      for (let ch = 0; ch < 3; ch++) {
        pixels[p + ch] = t < 0 ? grey[g + ch] : SALIENCY_OPACITY * diverging[t + ch] + (1 - SALIENCY_OPACITY) * grey[g + ch];
      }
      pixels[p + 3] = 255;
    }
  }
  const cell = SALIENCY_BOX_PX / Math.max(width, height);
  const box = { width: Math.round(cell * width), height: Math.round(cell * height) };
  element.saliency = { input, grad, width, height, box };
  drawColourBar(colourBar, { range, colorscale: DIVERGING_SCALE, perMap: false, colorbarTitle: "dL/dx" }, box.width);
  const source = bmpDataUrl(pixels, width, height);
  const shape = `${width}x${height}`;
  if (element.pictureShape === shape) return window.Plotly.relayout(element, { "images[0].source": source });
  element.pictureShape = shape;
  const layout = {
    width: box.width + 2 * SALIENCY_MARGIN_PX,
    height: box.height + 2 * SALIENCY_MARGIN_PX,
    margin: { l: SALIENCY_MARGIN_PX, r: SALIENCY_MARGIN_PX, t: SALIENCY_MARGIN_PX, b: SALIENCY_MARGIN_PX, pad: 0 },
    xaxis: { visible: false, range: [-0.5, width - 0.5], fixedrange: true },
    yaxis: { visible: false, range: [height - 0.5, -0.5], fixedrange: true },
    images: [{ source, xref: "x", yref: "y", x: -0.5, y: -0.5, sizex: width, sizey: height, xanchor: "left", yanchor: "top", sizing: "stretch", layer: "below" }],
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    showlegend: false,
  };
  return window.Plotly.react(element, [], layout, { ...PLOT_CONFIG, responsive: false, staticPlot: true });
}

// "x[12, 7] = 0.53, dL/dx = −0.0012" for the pixel under a pointer event on the saliency's
// element, or null off the picture (or before one is drawn).
export function saliencyCellText(element, event) {
  const shown = element.saliency;
  if (!shown) return null;
  const figure = (element.querySelector(".svg-container") || element).getBoundingClientRect();
  const c = Math.floor(((event.clientX - figure.left - SALIENCY_MARGIN_PX) / shown.box.width) * shown.width);
  const r = Math.floor(((event.clientY - figure.top - SALIENCY_MARGIN_PX) / shown.box.height) * shown.height);
  if (r < 0 || c < 0 || r >= shown.height || c >= shown.width) return null;
  return `x[${r}, ${c}] = ${formatNumber(shown.input[r][c])}, dL/dx = ${formatNumber(shown.grad[r][c])}`;
}

// history: {steps: [], loss: [], accuracy: [], evalSteps: [], evalAccuracy: []}. The page
// appends to these arrays in place, and Plotly.react only redraws arrays it has not seen, so
// the traces get copies. No automargin: it makes Plotly lay the figure out again.
// live: while live training plays, the axes end at round numbers above the data (the next
// of 1, 1.5, 2, 3, 4, 5, 6, 8 times a power of ten, at least 10 steps) instead of fitting it,
// and the lines have no markers, so that from one step to the next only the lines move
// (moveTraces), and the axes too when the data outgrow them. The next draw that is not live
// fits the axes to the data again.
export function drawCurves(element, growing, { live = false } = {}) {
  const history = Object.fromEntries(Object.entries(growing).map(([key, values]) => [key, [...values]]));
  const markers = !live && history.steps.length <= 60;
  const last = lastStep(history);
  const stepsTop = roundUp(Math.max(10, last * 1.05));
  const lossTop = roundUp(Math.max(0.1, largestFinite(history.loss)) * 1.05);
  const shape = { live };
  const traces = [
    { x: history.steps, y: history.loss },
    { x: history.steps, y: history.accuracy },
    { x: history.evalSteps, y: history.evalAccuracy },
  ];
  if (live && sameShape(element.liveShape, shape)) {
    const axes = element.layout.xaxis.range[1] === stepsTop && element.layout.yaxis.range[1] === lossTop ? undefined : { xaxis: { range: [0, stepsTop] }, yaxis: { range: [0, lossTop] } };
    return moveTraces(element, traces, [0, 1, 2], axes);
  }
  element.liveShape = shape;
  const batchMode = markers ? "lines+markers" : "lines";
  const data = [
    { type: "scatter", mode: batchMode, name: "batch loss", ...traces[0], line: { color: COLORS.loss, width: 1.5 }, marker: { size: 4 }, yaxis: "y" },
    { type: "scatter", mode: batchMode, name: "batch accuracy", ...traces[1], line: { color: COLORS.accuracy, width: 1.5 }, marker: { size: 4 }, yaxis: "y2" },
    {
      type: "scatter",
      mode: "markers+lines",
      name: "test accuracy",
      ...traces[2],
      marker: { color: COLORS.evalAccuracy, size: 6 },
      line: { color: COLORS.evalAccuracy, width: 1, dash: "dot" },
      yaxis: "y2",
    },
  ];
  const stepsRange = live ? { range: [0, stepsTop], autorange: false } : { rangemode: "tozero", autorange: true };
  const lossRange = live ? { range: [0, lossTop], autorange: false } : { rangemode: "tozero", autorange: true };
  const layout = {
    height: 220,
    margin: { l: 44, r: 10, t: 6, b: 34 },
    font: FONT,
    showlegend: true,
    legend: { orientation: "h", y: -0.22, x: 0, font: { size: 10 } },
    xaxis: { title: { text: "training step", standoff: 2 }, ...stepsRange, anchor: "y2", tickformat: "d", dtick: !live && last <= 8 ? 1 : undefined },
    yaxis: { title: { text: "loss", standoff: 2 }, domain: [0.55, 1], ...lossRange },
    yaxis2: { title: { text: "accuracy", standoff: 2 }, domain: [0, 0.45], range: [0, 1.05], tickformat: ".0%", anchor: "x" },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    uirevision: "curves",
  };
  return window.Plotly.react(element, data, layout, PLOT_CONFIG);
}

// The smallest of 1, 1.5, 2, 3, 4, 5, 6, 8 times a power of ten that is at least `value`.
function roundUp(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 1.5, 2, 3, 4, 5, 6, 8, 10].find((m) => m * power >= value * (1 - 1e-12));
  return step * power;
}

function largestFinite(values) {
  let largest = -Infinity;
  for (const value of values) if (Number.isFinite(value) && value > largest) largest = value;
  return largest;
}

function lastStep(history) {
  return Math.max(0, largestFinite(history.steps), largestFinite(history.evalSteps));
}

export function predictionSummary(result, trace) {
  if (trace.label == null && Array.isArray(trace.target)) {
    // A preset's example (the notes' worked example): outputs against a target vector, no class.
    return `output a = [${trace.prediction.map(formatNumber).join(", ")}] against the target y = [${trace.target.map(formatNumber).join(", ")}]; loss = ${formatNumber(trace.loss)}`;
  }
  const verdict = result.predicted === result.label ? "correct" : "wrong";
  const loss = formatNumber(trace.loss);
  if (result.binary) {
    const p = result.probability;
    const likelihood = result.label === 1 ? `log ${formatNumber(p)}` : `log(1 − ${formatNumber(p)})`;
    return `P(target 1) = ${p.toFixed(3)}: predicts ${result.predicted}; target ${result.label} (the digit is ${trace.label}): ${verdict}; loss −${likelihood} = ${loss}`;
  }
  const crossEntropy = !Array.isArray(trace.target);
  const why = crossEntropy ? ` = −log p(label) = −log ${formatNumber(result.labelProbability)}` : "";
  return `predicted ${result.predicted} (p = ${result.confidence.toFixed(3)}), label ${result.label}: ${verdict}; loss${why} = ${loss}`;
}
