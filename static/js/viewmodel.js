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
} from "./config.js";

export const INPUT_LAYER = -1;

export function shapeOf(array) {
  const shape = [];
  let node = array;
  while (Array.isArray(node)) {
    shape.push(node.length);
    node = node[0];
  }
  return shape;
}

// The trace's input and dL/dx may come as (H, W) or (C, H, W); the strip wants (C, H, W).
export function asChannels(array) {
  if (array == null) return null;
  return shapeOf(array).length === 2 ? [array] : array;
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

// Returns {kind: "maps" | "kernels" | "vector" | "matrix" | "none", data, note} for one
// layer card: maps (C, H, W), kernels (F, C, HH, WW), vector (K,), matrix (U, K).
export function layerArray(record, index, view) {
  const trace = record.trace;
  if (index === INPUT_LAYER) {
    if (view === "delta") return mapsOrVector(asChannels(trace.input_grad), "dL/dx");
    if (view === "a" || view === "z") return mapsOrVector(asChannels(trace.input), "x");
    return { kind: "none", note: "the input has no parameters" };
  }
  const layer = trace.layers[index];
  switch (view) {
    case "a":
    case "z":
    case "delta":
      if (layer[view] == null) return { kind: "none", note: `no ${view} for this layer` };
      return mapsOrVector(layer[view], view);
    case "W":
    case "dW":
    case "db": {
      const source = view === "W" ? layer.params : layer.grads;
      if (!source || source.W === undefined) return { kind: "none", note: `${layer.type} has no parameters` };
      if (view === "db") return { kind: "vector", data: source.b };
      return weightArray(source.W);
    }
    case "W-before":
    case "W-after":
    case "W-change": {
      const before = paramsOfLayer(record.step && record.step.params_before, index);
      const after = paramsOfLayer(record.step && record.step.params_after, index);
      if (!before || !after) return { kind: "none", note: `${layer.type} has no parameters` };
      if (view === "W-before") return weightArray(before.W);
      if (view === "W-after") return weightArray(after.W);
      return weightArray(subtractNested(after.W, before.W));
    }
    default:
      return { kind: "none", note: `unknown view ${view}` };
  }
}

function mapsOrVector(array, name) {
  const rank = shapeOf(array).length;
  if (rank === 3) return { kind: "maps", data: array };
  if (rank === 1) return { kind: "vector", data: array };
  if (rank === 2) return { kind: "maps", data: [array] };
  return { kind: "none", note: `${name} has an unexpected shape ${shapeOf(array).join("×")}` };
}

function weightArray(W) {
  const rank = shapeOf(W).length;
  if (rank === 4) return { kind: "kernels", data: W };
  if (rank === 2) return { kind: "matrix", data: W };
  return { kind: "vector", data: W };
}

function subtractNested(a, b) {
  if (Array.isArray(a)) return a.map((item, k) => subtractNested(item, b[k]));
  return a - b;
}

function clamp(value, lo, hi) {
  return Math.max(lo, Math.min(hi, value));
}

// Tiling: maps are laid out in a grid of `cols` columns, separated by gutters of null
// cells (Plotly leaves them blank), so one heatmap trace draws a whole layer.
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

function tile(maps, cols, rows, mapH, mapW) {
  const height = rows * mapH + (rows - 1) * GUTTER_CELLS;
  const width = cols * mapW + (cols - 1) * GUTTER_CELLS;
  const z = Array.from({ length: height }, () => new Array(width).fill(null));
  maps.forEach((map, m) => {
    const row0 = Math.floor(m / cols) * (mapH + GUTTER_CELLS);
    const col0 = (m % cols) * (mapW + GUTTER_CELLS);
    for (let i = 0; i < mapH; i++) {
      const src = map[i];
      const dst = z[row0 + i];
      for (let j = 0; j < mapW; j++) dst[col0 + j] = src[j];
    }
  });
  return z;
}

function extent(values) {
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    if (v == null || Number.isNaN(v)) continue;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (min === Infinity) return [0, 0];
  return [min, max];
}

function* flatValues(array) {
  if (Array.isArray(array)) {
    for (const item of array) yield* flatValues(item);
  } else {
    yield array;
  }
}

// Colour range of a set of values: symmetric around zero for signed quantities, from
// min(0, low) to high for activations. A range of width zero is widened so Plotly draws it.
export function colourRange(values, signed) {
  const [lo, hi] = extent(values);
  if (signed) {
    const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
    return [-m, m];
  }
  const low = Math.min(0, lo);
  return hi > low ? [low, hi] : [low, low + 1];
}

function normalise(map, range) {
  const [lo, hi] = range;
  const span = hi - lo;
  return map.map((row) => row.map((v) => (v - lo) / span));
}

// Builds the view model of one layer card: the heatmap matrix, its geometry and colour
// scale, how to map a heatmap cell back to array indices, and pool winners to mark.
export function buildCardModel(record, index, view, { perMap = false, markWinners = true, maxWidth = Infinity } = {}) {
  const isInput = index === INPUT_LAYER;
  const greyInput = isInput && (view === "a" || view === "z");
  const signed = greyInput ? false : isSignedView(view);
  const array = layerArray(record, index, view);
  const base = {
    index,
    view,
    kind: array.kind,
    note: array.note,
    title: layerTitle(record.trace, index),
    signed,
    colorscale: greyInput ? GREY_SCALE : signed ? DIVERGING_SCALE : SEQUENTIAL_SCALE,
    colorbarTitle: isInput && view === "delta" ? "dL/dx" : shortViewName(view),
  };
  if (array.kind === "none") return base;

  if (array.kind === "maps" || array.kind === "kernels") {
    // kernels: one tile per (filter f, input channel c), rows = filters, cols = channels.
    const isKernels = array.kind === "kernels";
    const maps = isKernels ? array.data.flat(1) : array.data;
    const count = maps.length;
    const mapH = maps[0].length;
    const mapW = maps[0][0].length;
    const target = isInput ? INPUT_MAP_PX : count <= FEW_MAPS ? MAP_PX_FEW : MAP_PX;
    let cellPx = clamp(Math.round(target / Math.max(mapH, mapW)), MIN_CELL_PX, MAX_CELL_PX);
    let grid;
    if (isKernels) {
      const filters = array.data.length;
      const channels = array.data[0].length;
      grid = { cols: channels, rows: filters };
      const fit = Math.floor(MAX_FIGURE_HEIGHT_PX / (filters * (mapH + GUTTER_CELLS)));
      cellPx = clamp(Math.min(cellPx, fit), MIN_CELL_PX, MAX_CELL_PX);
    } else {
      grid = tileGrid(count, mapH, mapW, cellPx);
      const fit = Math.floor(MAX_FIGURE_HEIGHT_PX / (grid.rows * (mapH + GUTTER_CELLS)));
      cellPx = clamp(Math.min(cellPx, Math.max(fit, 2)), MIN_CELL_PX, MAX_CELL_PX);
    }
    const fitWidth = Math.floor(maxWidth / (grid.cols * (mapW + GUTTER_CELLS)));
    cellPx = clamp(Math.min(cellPx, fitWidth), MIN_CELL_PX, MAX_CELL_PX);
    let ranges = null;
    let shown = maps;
    let range = colourRange(flatValues(maps), signed);
    if (perMap) {
      ranges = maps.map((m) => colourRange(flatValues(m), signed));
      shown = maps.map((m, k) => normalise(m, ranges[k]));
      range = [0, 1];
    }
    const z = tile(shown, grid.cols, grid.rows, mapH, mapW);
    const widthCells = z[0].length;
    const heightCells = z.length;
    const model = {
      ...base,
      z,
      raw: maps,
      ranges,
      range,
      perMap,
      mapH,
      mapW,
      cols: grid.cols,
      rows: grid.rows,
      count,
      isKernels,
      channels: isKernels ? array.data[0].length : null,
      cellW: cellPx,
      cellH: cellPx,
      plotWidth: widthCells * cellPx,
      plotHeight: heightCells * cellPx,
      showText: mapH * mapW * count <= CELL_TEXT_MAX_CELLS && cellPx >= CELL_TEXT_MIN_PX,
    };
    model.winners = markWinners && !isKernels ? poolWinners(record.trace, index, view, model) : null;
    return model;
  }

  if (array.kind === "vector") {
    // A long vector wraps into several columns (read down, then right) so that every unit
    // keeps a row tall enough to aim at and click, within the usual figure height.
    const values = array.data;
    const k = values.length;
    const maxRows = Math.floor(MAX_FIGURE_HEIGHT_PX / MIN_VECTOR_ROW_PX);
    const columns = Math.ceil(k / maxRows);
    const rows = Math.ceil(k / columns);
    const cellH = clamp(Math.floor(MAX_FIGURE_HEIGHT_PX / rows), MIN_VECTOR_ROW_PX, 28);
    const cellW = columns > 1 ? VECTOR_WRAPPED_COLUMN_PX : cellH >= 20 ? Math.max(VECTOR_COLUMN_PX, 40) : VECTOR_COLUMN_PX;
    const z = Array.from({ length: rows }, (_, y) =>
      Array.from({ length: columns }, (_, x) => (x * rows + y < k ? values[x * rows + y] : null)),
    );
    const range = colourRange(values, signed);
    return {
      ...base,
      z,
      raw: values,
      range,
      perMap: false,
      count: 1,
      mapH: rows,
      mapW: columns,
      cols: 1,
      rows: 1,
      cellW,
      cellH,
      plotWidth: columns * cellW,
      plotHeight: rows * cellH,
      showText: cellH >= 20 && columns === 1,
    };
  }

  // matrix (U, K): a dense layer's weights, squeezed to a fixed width.
  const rows = array.data.length;
  const cols = array.data[0].length;
  const cellH = clamp(Math.floor(MAX_FIGURE_HEIGHT_PX / rows), 1, 28);
  const plotWidth = Math.min(MATRIX_WIDTH_PX, maxWidth, Math.max(cols * cellH, 24));
  return {
    ...base,
    z: array.data,
    raw: array.data,
    range: colourRange(flatValues(array.data), signed),
    perMap: false,
    count: 1,
    mapH: rows,
    mapW: cols,
    cols: 1,
    rows: 1,
    cellW: plotWidth / cols,
    cellH,
    plotWidth,
    plotHeight: rows * cellH,
    showText: rows * cols <= 16 && cellH >= 20,
  };
}

function shortViewName(view) {
  const entry = VIEWS.find((v) => v.key === view);
  if (entry) return entry.short;
  if (view === "W-change") return "ΔW";
  if (view === "W-before") return "W";
  if (view === "W-after") return "W'";
  return view;
}

// Maps a heatmap cell (column x, row y of the tiled matrix) back to array indices.
// Returns null on a gutter. Result: {map, i, j, value} for maps, {f, c, r, s, value} for
// kernels, {k, value} for vectors, {u, k, value} for matrices.
export function cellAt(model, x, y) {
  if (!model || model.kind === "none") return null;
  if (model.kind === "vector") {
    const column = Math.round(x);
    const row = Math.round(y);
    if (column < 0 || column >= model.mapW || row < 0 || row >= model.mapH) return null;
    const k = column * model.mapH + row;
    if (k >= model.raw.length) return null;
    return { k, value: model.raw[k] };
  }
  if (model.kind === "matrix") {
    const u = Math.round(y);
    const k = Math.round(x);
    if (u < 0 || u >= model.raw.length || k < 0 || k >= model.raw[0].length) return null;
    return { u, k, value: model.raw[u][k] };
  }
  const col = Math.round(x);
  const row = Math.round(y);
  const stepW = model.mapW + GUTTER_CELLS;
  const stepH = model.mapH + GUTTER_CELLS;
  const tileCol = Math.floor(col / stepW);
  const tileRow = Math.floor(row / stepH);
  const j = col - tileCol * stepW;
  const i = row - tileRow * stepH;
  if (j < 0 || i < 0 || j >= model.mapW || i >= model.mapH || tileCol >= model.cols) return null;
  const m = tileRow * model.cols + tileCol;
  if (m >= model.count) return null;
  const value = model.raw[m][i][j];
  if (model.kind === "kernels") {
    return { f: tileRow, c: tileCol, r: i, s: j, value, map: m, i, j };
  }
  return { map: m, i, j, value };
}

// Inverse of cellAt for maps and kernels: the tiled (x, y) of element (map m, i, j).
export function cellPosition(model, m, i, j) {
  if (model.kind === "vector") return { x: Math.floor(i / model.mapH), y: i % model.mapH };
  if (model.kind === "matrix") return { x: j, y: i };
  const x = (m % model.cols) * (model.mapW + GUTTER_CELLS) + j;
  const y = Math.floor(m / model.cols) * (model.mapH + GUTTER_CELLS) + i;
  return { x, y };
}

// Max-pool winners, marked on the pooled layer's input: when the next layer is a max-pool
// and the card shows this layer's output, a mask with 1 on every input that won no window
// (drawn as a veil) and null on the winners and the gutters.
function poolWinners(trace, index, view, model) {
  if (!["a", "z", "delta"].includes(view)) return null;
  const next = trace.layers[index + 1];
  if (!next || next.type !== "maxpool" || !next.argmax) return null;
  const inputW = next.input_shape[next.input_shape.length - 1];
  const mask = model.z.map((row) => row.map((v) => (v === null ? null : 1)));
  let winners = 0;
  next.argmax.forEach((plane, c) => {
    for (const row of plane) {
      for (const flat of row) {
        const p = cellPosition(model, c, Math.floor(flat / inputW), flat % inputW);
        mask[p.y][p.x] = null;
        winners += 1;
      }
    }
  });
  return { mask, count: winners, pool: next.name };
}

export function argmaxIndex(values) {
  let best = 0;
  for (let k = 1; k < values.length; k++) if (values[k] > values[best]) best = k;
  return best;
}
