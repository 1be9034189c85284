// Turns the API's trace and step answers into view models for the drawing modules:
// which array each layer card shows for a view, tiled into one heatmap matrix with
// gutters, its colour range, and a lookup from heatmap cell back to array indices.
// Nothing here draws; nothing here recomputes what the engine computed.

import {
  DIVERGING_SCALE,
  SEQUENTIAL_SCALE,
  GREY_SCALE,
  VIEWS,
  UPDATE_VIEWS,
  MAP_PX,
  INPUT_MAP_PX,
  MAP_PX_FEW,
  FEW_MAPS,
  MIN_CELL_PX,
  MAX_CELL_PX,
  MAX_FIGURE_HEIGHT_PX,
  VECTOR_COLUMN_PX,
  VECTOR_WRAPPED_COLUMN_PX,
  MIN_VECTOR_ROW_PX,
  MATRIX_WIDTH_PX,
  GUTTER_CELLS,
  CELL_TEXT_MAX_CELLS,
  CELL_TEXT_MIN_PX,
} from "../config.js";
import { shapeOfNested } from "../server/tensors.js";

export const INPUT_LAYER = -1;

// The trace's input and dL/dx may come as (H, W) or (C, H, W); the strip wants (C, H, W).
export function asChannels(array) {
  if (array == null) return null;
  return shapeOfNested(array).length === 2 ? [array] : array;
}

export function isSignedView(view) {
  if (UPDATE_VIEWS[view]) return true;
  const entry = VIEWS.find((v) => v.key === view);
  return entry ? entry.signed : true;
}

export function viewLabel(view) {
  if (UPDATE_VIEWS[view]) return UPDATE_VIEWS[view].label;
  const entry = VIEWS.find((v) => v.key === view);
  return entry ? entry.label : view;
}

// The per-layer parameter records of a step answer may be a list (one entry per layer,
// {} for layers without parameters) or an object keyed by layer index.
export function paramsOfLayer(collection, index) {
  if (!collection) return null;
  const entry = Array.isArray(collection) ? collection[index] : collection[index] ?? collection[String(index)];
  if (!entry || entry.W === undefined) return null;
  return entry;
}

export function layerTitle(trace, index) {
  if (index === INPUT_LAYER) return "input x";
  return trace.layers[index].name;
}

export function describeLayer(layer) {
  const spec = layer.spec || {};
  const shape = (s) => (Array.isArray(s) ? s.join("×") : String(s));
  const pair = (p) => (Array.isArray(p) ? (p[0] === p[1] ? `${p[0]}` : `${p[0]}×${p[1]}`) : `${p}`);
  const window = (p) => (Array.isArray(p) ? `${p[0]}×${p[1]}` : `${p}×${p}`);
  const out = shape(layer.output_shape);
  switch (layer.type) {
    case "conv":
      return `${spec.filters} filters ${window(spec.kernel)}, stride ${pair(spec.stride)}, pad ${pair(spec.padding)}, ${spec.activation} → ${out}`;
    case "maxpool":
    case "avgpool":
      return `${layer.type === "maxpool" ? "max" : "average"} ${window(spec.size)}, stride ${pair(spec.stride)} → ${out}`;
    case "flatten":
      return `${shape(layer.input_shape)} → ${out}`;
    case "dense":
      return `${spec.units} units, ${spec.activation}`;
    default:
      return out;
  }
}

// The views whose numbers are weight gradients: by default the mini-batch mean the update
// applied ("batch"), or the traced sample's own ("sample").
export const GRADIENT_VIEWS = ["dW", "db"];

function hasWeights(layer) {
  return layer.type === "conv" || layer.type === "dense";
}

// Returns {kind: "maps" | "kernels" | "vector" | "matrix" | "none", shape, data, note} for one
// layer card, read from the answer's flat tensors: maps (C, H, W), kernels (F, C, HH, WW),
// vector (K,), matrix (U, K). `gradients` picks the batch mean or the sample's own for dW/db.
export function layerArray(record, index, view, gradients = "batch") {
  const trace = record.trace;
  const tensor = (name) => record.answer.tensor(name);
  const missing = (what) => ({ kind: "none", note: record.later && record.later.state !== "ready" ? (record.later.message || "loading the weights and gradients of this step…") : `${what} was not fetched for this ${record.step ? "step" : "trace"} (live training fetches only what the view shows)` });
  if (index === INPUT_LAYER) {
    if (view === "delta") return mapsOrVector(tensor("input_grad"), "dL/dx") || missing("dL/dx");
    if (view === "a" || view === "z") return mapsOrVector(tensor("input"), "x") || missing("the input");
    return { kind: "none", note: "the input has no parameters" };
  }
  const layer = trace.layers[index];
  const weightless = { kind: "none", note: `${layer.type} has no parameters` };
  switch (view) {
    case "a":
    case "z":
    case "delta":
      return mapsOrVector(tensor(`layers.${index}.${view}`), view) || missing(view === "delta" ? "δ" : view);
    case "W":
    case "dW":
    case "db": {
      if (!hasWeights(layer)) return weightless;
      const key = view === "db" ? "b" : "W";
      let name = `layers.${index}.params.${key}`;
      if (view !== "W") name = gradientSource(record, gradients) === "batch" ? `batch_grads.${index}.${key}` : `layers.${index}.grads.${key}`;
      const source = tensor(name);
      if (!source) return missing(view);
      return view === "db" ? { kind: "vector", shape: source.shape, data: source.data } : weightArray(source);
    }
    case "W-before":
    case "W-after":
    case "W-change": {
      if (!hasWeights(layer) || !record.step) return weightless;
      const before = tensor(`layers.${index}.params.W`);
      const after = tensor(`params_after.${index}.W`);
      if (!before || !after) return missing("the weights");
      if (view === "W-before") return weightArray(before);
      if (view === "W-after") return weightArray(after);
      const change = new Float64Array(after.data.length);
      for (let k = 0; k < change.length; k++) change[k] = after.data[k] - before.data[k];
      return weightArray({ shape: after.shape, data: change });
    }
    default:
      return { kind: "none", note: `unknown view ${view}` };
  }
}

// Which gradient dW/db show for a record: the batch mean when the record is a step (what the
// update applied), unless the sample's own was asked for; a trace has only the sample's own.
export function gradientSource(record, wanted) {
  return record.step && wanted !== "sample" ? "batch" : "sample";
}

function mapsOrVector(tensor, name) {
  if (!tensor) return null;
  const { shape, data } = tensor;
  if (shape.length === 3) return { kind: "maps", shape, data };
  if (shape.length === 2) return { kind: "maps", shape: [1, ...shape], data };
  if (shape.length === 1) return { kind: "vector", shape, data };
  return { kind: "none", note: `${name} has an unexpected shape ${shape.join("×")}` };
}

function weightArray({ shape, data }) {
  if (shape.length === 4) return { kind: "kernels", shape, data };
  if (shape.length === 2) return { kind: "matrix", shape, data };
  return { kind: "vector", shape, data };
}

function clamp(value, lo, hi) {
  return Math.max(lo, Math.min(hi, value));
}

// Tiling: maps are laid out in a grid of `cols` columns, separated by gutters of empty cells,
// so one image draws a whole layer.
function tileGrid(count, mapH, mapW, cellPx) {
  if (count <= 3) return { cols: 1, rows: count };
  const gridCols = [1, 2, 3, 4, 6, 8];
  for (const cols of gridCols) {
    const rows = Math.ceil(count / cols);
    const height = rows * (mapH + GUTTER_CELLS) * cellPx;
    if (height <= MAX_FIGURE_HEIGHT_PX) return { cols, rows };
  }
  const cols = 8;
  return { cols, rows: Math.ceil(count / cols) };
}

function extent(data, from = 0, to = data.length) {
  let min = Infinity;
  let max = -Infinity;
  for (let k = from; k < to; k++) {
    const v = data[k];
    if (v == null || Number.isNaN(v)) continue;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (min === Infinity) return [0, 0];
  return [min, max];
}

// Colour range of a set of values (an array, a typed array, or any iterable): symmetric
// around zero for signed quantities, from min(0, low) to high for activations. A range of
// width zero is widened so it can be drawn.
export function colourRange(values, signed, from, to) {
  const data = Array.isArray(values) || ArrayBuffer.isView(values) ? values : Array.from(values);
  const [lo, hi] = extent(data, from, to);
  if (signed) {
    const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
    return [-m, m];
  }
  const low = Math.min(0, lo);
  return hi > low ? [low, hi] : [low, low + 1];
}

// Builds the view model of one layer card: which values it shows, their tiling, geometry and
// colour range, how to map a cell back to array indices, and pool winners to mark. The values
// stay the answer's flat tensor (`data`); `valueAt(x, y)` reads the one under a cell.
export function buildCardModel(record, index, view, { perMap = false, markWinners = true, maxWidth = Infinity, gradients = "batch" } = {}) {
  const isInput = index === INPUT_LAYER;
  const greyInput = isInput && (view === "a" || view === "z");
  const signed = greyInput ? false : isSignedView(view);
  const array = layerArray(record, index, view, gradients);
  const source = GRADIENT_VIEWS.includes(view) && array.kind !== "none" ? gradientSource(record, gradients) : null;
  const base = {
    index,
    view,
    kind: array.kind,
    note: array.note,
    title: layerTitle(record.trace, index),
    signed,
    colorscale: greyInput ? GREY_SCALE : signed ? DIVERGING_SCALE : SEQUENTIAL_SCALE,
    colorbarTitle: isInput && view === "delta" ? "dL/dx" : shortViewName(view),
    gradientSource: source,
  };
  if (array.kind === "none") return base;
  const data = array.data;

  if (array.kind === "maps" || array.kind === "kernels") {
    // kernels: one tile per (filter f, input channel c), rows = filters, cols = channels.
    const isKernels = array.kind === "kernels";
    const [mapH, mapW] = array.shape.slice(-2);
    const count = isKernels ? array.shape[0] * array.shape[1] : array.shape[0];
    const target = isInput ? INPUT_MAP_PX : count <= FEW_MAPS ? MAP_PX_FEW : MAP_PX;
    let cellPx = clamp(Math.round(target / Math.max(mapH, mapW)), MIN_CELL_PX, MAX_CELL_PX);
    let grid;
    if (isKernels) {
      const filters = array.shape[0];
      grid = { cols: array.shape[1], rows: filters };
      const fit = Math.floor(MAX_FIGURE_HEIGHT_PX / (filters * (mapH + GUTTER_CELLS)));
      cellPx = clamp(Math.min(cellPx, fit), MIN_CELL_PX, MAX_CELL_PX);
    } else {
      grid = tileGrid(count, mapH, mapW, cellPx);
      const fit = Math.floor(MAX_FIGURE_HEIGHT_PX / (grid.rows * (mapH + GUTTER_CELLS)));
      cellPx = clamp(Math.min(cellPx, Math.max(fit, 2)), MIN_CELL_PX, MAX_CELL_PX);
    }
    const fitWidth = Math.floor(maxWidth / (grid.cols * (mapW + GUTTER_CELLS)));
    cellPx = clamp(Math.min(cellPx, fitWidth), MIN_CELL_PX, MAX_CELL_PX);
    const plane = mapH * mapW;
    // A map small enough to print its numbers gets cells wide enough for them ("-0.30").
    if (plane * count <= CELL_TEXT_MAX_CELLS) cellPx = Math.max(cellPx, Math.min(CELL_TEXT_MIN_PX, fitWidth));
    const ranges = perMap ? Array.from({ length: count }, (_, m) => colourRange(data, signed, m * plane, (m + 1) * plane)) : null;
    const widthCells = grid.cols * mapW + (grid.cols - 1) * GUTTER_CELLS;
    const heightCells = grid.rows * mapH + (grid.rows - 1) * GUTTER_CELLS;
    const model = {
      ...base,
      data,
      size: data.length,
      ranges,
      range: perMap ? [0, 1] : colourRange(data, signed),
      perMap,
      mapH,
      mapW,
      cols: grid.cols,
      rows: grid.rows,
      count,
      isKernels,
      channels: isKernels ? array.shape[1] : null,
      widthCells,
      heightCells,
      cellW: cellPx,
      cellH: cellPx,
      plotWidth: widthCells * cellPx,
      plotHeight: heightCells * cellPx,
      showText: plane * count <= CELL_TEXT_MAX_CELLS && cellPx >= CELL_TEXT_MIN_PX,
    };
    model.winners = markWinners && !isKernels ? poolWinners(record, index, view, model) : null;
    return model;
  }

  if (array.kind === "vector") {
    // A long vector wraps into several columns (read down, then right) so that every unit
    // keeps a row tall enough to aim at and click, within the usual figure height.
    const k = data.length;
    const maxRows = Math.floor(MAX_FIGURE_HEIGHT_PX / MIN_VECTOR_ROW_PX);
    const columns = Math.ceil(k / maxRows);
    const rows = Math.ceil(k / columns);
    const cellH = clamp(Math.floor(MAX_FIGURE_HEIGHT_PX / rows), MIN_VECTOR_ROW_PX, 28);
    // The output layer's units are the classes: each cell is labelled with its class (0-9).
    const classLabels = index === record.trace.layers.length - 1 && columns === 1 && k > 1 && k <= 10 && cellH >= 20;
    const cellW = columns > 1 ? VECTOR_WRAPPED_COLUMN_PX : classLabels ? 64 : cellH >= 20 ? Math.max(VECTOR_COLUMN_PX, 40) : VECTOR_COLUMN_PX;
    return {
      ...base,
      data,
      size: k,
      range: colourRange(data, signed),
      perMap: false,
      count: 1,
      mapH: rows,
      mapW: columns,
      cols: 1,
      rows: 1,
      widthCells: columns,
      heightCells: rows,
      cellW,
      cellH,
      plotWidth: columns * cellW,
      plotHeight: rows * cellH,
      showText: cellH >= 20 && columns === 1,
      classLabels,
    };
  }

  // matrix (U, K): a dense layer's weights, squeezed to a fixed width.
  const [rows, cols] = array.shape;
  const cellH = clamp(Math.floor(MAX_FIGURE_HEIGHT_PX / rows), 1, 28);
  // A small matrix prints its numbers: each cell is then wide enough for one ("-0.30").
  const text = rows * cols <= CELL_TEXT_MAX_CELLS && cellH >= 20 && cols * CELL_TEXT_MIN_PX <= maxWidth;
  const plotWidth = text ? cols * CELL_TEXT_MIN_PX : Math.min(MATRIX_WIDTH_PX, maxWidth, Math.max(cols * cellH, 24));
  return {
    ...base,
    data,
    size: data.length,
    range: colourRange(data, signed),
    perMap: false,
    count: 1,
    mapH: rows,
    mapW: cols,
    cols: 1,
    rows: 1,
    widthCells: cols,
    heightCells: rows,
    cellW: plotWidth / cols,
    cellH,
    plotWidth,
    plotHeight: rows * cellH,
    showText: text,
  };
}

// The flat index into `model.data` of tiled cell (x, y), or -1 on a gutter or outside.
export function flatIndexAt(model, x, y) {
  if (!model || model.kind === "none") return -1;
  if (x < 0 || y < 0 || x >= model.widthCells || y >= model.heightCells) return -1;
  if (model.kind === "vector") {
    const k = x * model.mapH + y;
    return k < model.size ? k : -1;
  }
  if (model.kind === "matrix") return y * model.mapW + x;
  const stepW = model.mapW + GUTTER_CELLS;
  const stepH = model.mapH + GUTTER_CELLS;
  const tileCol = Math.floor(x / stepW);
  const tileRow = Math.floor(y / stepH);
  const j = x - tileCol * stepW;
  const i = y - tileRow * stepH;
  if (j >= model.mapW || i >= model.mapH) return -1;
  const m = tileRow * model.cols + tileCol;
  if (m >= model.count) return -1;
  return (m * model.mapH + i) * model.mapW + j;
}

// The value a cell is drawn with: the array's value, or its place in its map's own range
// (0..1) when each map is scaled on its own.
export function shownValue(model, k) {
  const v = model.data[k];
  if (!model.perMap) return v;
  const [lo, hi] = model.ranges[Math.floor(k / (model.mapH * model.mapW))];
  return (v - lo) / (hi - lo);
}

function shortViewName(view) {
  const entry = VIEWS.find((v) => v.key === view);
  if (entry) return entry.short;
  if (view === "W-change") return "ΔW";
  if (view === "W-before") return "W";
  if (view === "W-after") return "W'";
  return view;
}

// Maps a cell (column x, row y of the tiled picture) back to array indices. Returns null on
// a gutter. Result: {map, i, j, value} for maps, {f, c, r, s, value} for kernels, {k, value}
// for vectors, {u, k, value} for matrices.
export function cellAt(model, x, y) {
  const col = Math.round(x);
  const row = Math.round(y);
  const k = flatIndexAt(model, col, row);
  if (k < 0) return null;
  const value = model.data[k];
  if (model.kind === "vector") return { k, value };
  if (model.kind === "matrix") return { u: row, k: col, value };
  const plane = model.mapH * model.mapW;
  const m = Math.floor(k / plane);
  const i = Math.floor((k % plane) / model.mapW);
  const j = k % model.mapW;
  if (model.kind === "kernels") return { f: Math.floor(m / model.channels), c: m % model.channels, r: i, s: j, value, map: m, i, j };
  return { map: m, i, j, value };
}

// Inverse of cellAt: the tiled (x, y) of element (map m, i, j); for a vector, i is the unit.
export function cellPosition(model, m, i, j) {
  if (model.kind === "vector") return { x: Math.floor(i / model.mapH), y: i % model.mapH };
  if (model.kind === "matrix") return { x: j, y: i };
  const x = (m % model.cols) * (model.mapW + GUTTER_CELLS) + j;
  const y = Math.floor(m / model.cols) * (model.mapH + GUTTER_CELLS) + i;
  return { x, y };
}

// Max-pool winners, marked on the pooled layer's input: when the next layer is a max-pool and
// the card shows this layer's output, a mask over the card's values with 1 on every input that
// won a window (outlined). A window whose inputs are all 0 (a dead ReLU region) has no real
// winner and is skipped: its winner's activation is 0 and, with no negative activation in the
// layer, so is every other input of its window.
function poolWinners(record, index, view, model) {
  if (!["a", "z", "delta"].includes(view)) return null;
  const next = record.trace.layers[index + 1];
  if (!next || next.type !== "maxpool") return null;
  const argmax = record.answer.tensor(`layers.${index + 1}.argmax`);
  if (!argmax) return null;
  const [channels, outH, outW] = argmax.shape;
  const plane = model.mapH * model.mapW;
  const mask = new Uint8Array(model.size);
  const activation = record.answer.tensor(`layers.${index}.a`);
  let nonNegative = Boolean(activation);
  if (activation) for (let k = 0; k < activation.data.length && nonNegative; k++) nonNegative = activation.data[k] >= 0;
  let winners = 0;
  let skipped = 0;
  for (let c = 0; c < channels; c++) {
    for (let k = 0; k < outH * outW; k++) {
      const at = c * plane + argmax.data[c * outH * outW + k];
      if (nonNegative && activation.data[at] === 0) {
        skipped += 1;
        continue;
      }
      if (!mask[at]) winners += 1;
      mask[at] = 1;
    }
  }
  return { mask, count: winners, skipped, pool: next.name };
}

export function argmaxIndex(values) {
  let best = 0;
  for (let k = 1; k < values.length; k++) if (values[k] > values[best]) best = k;
  return best;
}
