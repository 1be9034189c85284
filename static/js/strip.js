// Draws the network as a strip of layer cards, one Plotly figure per layer (the maps
// tiled into one heatmap), and keeps per-frame work small: a card is re-plotted only
// when what it shows changes; animation states are attribute toggles styled in CSS.

import { COLORBAR_MIN_PX, FIGURE_MARGIN, COLORS, STRIP_MIN_WIDTH_PX } from "./config.js";
import { INPUT_LAYER, buildCardModel, cellAt, cellPosition, describeLayer, viewLabel } from "./viewmodel.js";
import { formatNumber } from "./format.js";

const PLOT_CONFIG = { displayModeBar: false, responsive: false, doubleClick: false, scrollZoom: false };

export class Strip {
  constructor(container, { onCellClick }) {
    this.container = container;
    this.onCellClick = onCellClick;
    this.cards = new Map(); // layer index -> {element, plot, readout, model, drawnKey}
    this.signature = null;
    this.selection = null;
    this.renderToken = 0;
  }

  // (Re)creates the cards when the architecture changes.
  build(trace) {
    const signature = JSON.stringify(trace.layers.map((l) => [l.name, l.type, l.output_shape]));
    if (signature === this.signature) return;
    this.signature = signature;
    for (const card of this.cards.values()) window.Plotly.purge(card.plot);
    this.cards.clear();
    this.container.replaceChildren();
    const indices = [INPUT_LAYER, ...trace.layers.map((_, k) => k)];
    indices.forEach((index, position) => {
      if (position > 0) {
        const arrow = document.createElement("div");
        arrow.className = "flow-arrow";
        arrow.dataset.after = String(indices[position - 1]);
        arrow.setAttribute("aria-hidden", "true");
        arrow.innerHTML = "<span></span>";
        this.container.append(arrow);
      }
      this.container.append(this.createCard(trace, index));
    });
  }

  createCard(trace, index) {
    const layer = index === INPUT_LAYER ? null : trace.layers[index];
    const element = document.createElement("article");
    element.className = "layer-card";
    element.dataset.layer = String(index);
    element.dataset.type = layer ? layer.type : "input";
    element.dataset.state = "done";
    const title = layer ? layer.name : "input x";
    const shape = (layer ? layer.output_shape : null) || null;
    const description = layer
      ? describeLayer(layer)
      : `${asShapeText(trace.input)} pixels in [0, 1]`;
    element.innerHTML = `
      <header class="layer-head">
        <h3 class="layer-name">${title}</h3>
        <span class="layer-view" data-role="view"></span>
      </header>
      <p class="layer-desc">${description}</p>
      <div class="layer-plot" data-role="plot" data-layer-name="${title}"></div>
      <div class="colorbar" data-role="colorbar" role="img" hidden></div>
      <p class="layer-note" data-role="note" hidden></p>
      <p class="layer-readout" data-role="readout">&nbsp;</p>`;
    element.setAttribute("aria-label", `${title}${shape ? ", output " + shape.join("×") : ""}`);
    const plot = element.querySelector('[data-role="plot"]');
    const card = {
      cursor: null,
      index,
      element,
      plot,
      viewTag: element.querySelector('[data-role="view"]'),
      note: element.querySelector('[data-role="note"]'),
      colorbar: element.querySelector('[data-role="colorbar"]'),
      readout: element.querySelector('[data-role="readout"]'),
      model: null,
      drawnKey: null,
      listening: false,
    };
    this.cards.set(index, card);
    this.enableKeyboard(card);
    return element;
  }

  // The strip's width for sizing maps; never below STRIP_MIN_WIDTH_PX, so a strip narrowed by
  // the docked inspector (where it scrolls sideways) keeps its maps' tiling and cell size.
  availableWidth() {
    const width = Math.max(this.container.clientWidth || 900, STRIP_MIN_WIDTH_PX);
    return Math.max(120, width - 24 - FIGURE_MARGIN.l - FIGURE_MARGIN.r);
  }

  // Draws every card for `viewOf(index)`; resolves when Plotly has drawn them all. With
  // `spread`, one card per animation frame (in the direction the data flows), so a view
  // change during the animation never blocks a frame for the whole strip; a newer render
  // takes over from an unfinished one.
  async render(record, viewOf, options, { spread = false, backward = false } = {}) {
    const token = ++this.renderToken;
    const maxWidth = this.availableWidth();
    const cards = [...this.cards.values()];
    if (backward) cards.reverse();
    for (const card of cards) {
      if (token !== this.renderToken) return false;
      const view = viewOf(card.index);
      const key = `${record.id}|${view}|${options.perMap}|${options.markWinners}|${maxWidth}`;
      if (card.drawnKey === key) continue;
      const model = buildCardModel(record, card.index, view, { ...options, maxWidth });
      card.model = model;
      card.drawnKey = key;
      card.viewTag.textContent = (model.colorbarTitle || "") + (model.perMap ? " · per map" : "");
      card.viewTag.title = viewLabel(view);
      card.element.dataset.view = view;
      if (model.kind === "none") {
        card.note.textContent = model.note;
        card.note.hidden = false;
        card.plot.hidden = true;
        card.colorbar.hidden = true;
        card.element.dataset.empty = "true";
        continue;
      }
      card.note.hidden = true;
      card.plot.hidden = false;
      card.element.dataset.empty = "false";
      await this.draw(card, model);
      if (spread) await nextFrame();
    }
    return token === this.renderToken;
  }

  draw(card, model) {
    const widthCells = model.z[0].length;
    const heightCells = model.z.length;
    const heatmap = {
      type: "heatmap",
      z: model.z,
      zmin: model.range[0],
      zmax: model.range[1],
      colorscale: model.colorscale,
      hoverinfo: "none",
      showscale: false,
    };
    if (model.showText) {
      heatmap.texttemplate = "%{z:.2f}";
      heatmap.textfont = { size: 11 };
    }
    const traces = [heatmap];
    if (model.winners) {
      traces.push({
        type: "heatmap",
        z: model.winners.mask,
        zmin: 0,
        zmax: 1,
        colorscale: [[0, COLORS.loserVeil], [1, COLORS.loserVeil]],
        showscale: false,
        hoverinfo: "skip",
      });
    }
    const layout = {
      width: Math.round(model.plotWidth + FIGURE_MARGIN.l + FIGURE_MARGIN.r),
      height: Math.round(model.plotHeight + FIGURE_MARGIN.t + FIGURE_MARGIN.b),
      margin: { ...FIGURE_MARGIN, pad: 0 },
      xaxis: { visible: false, range: [-0.5, widthCells - 0.5], fixedrange: true },
      yaxis: { visible: false, range: [heightCells - 0.5, -0.5], fixedrange: true },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      dragmode: false,
      hovermode: "closest",
      showlegend: false,
      shapes: this.selectionShapes(card, model),
    };
    card.plot.style.width = `${layout.width}px`;
    card.plot.style.height = `${layout.height}px`;
    drawColourBar(card.colorbar, model, Math.max(layout.width, COLORBAR_MIN_PX));
    // A changed size gets a fresh plot: Plotly.react keeps some of the old figure's layout.
    const geometry = `${layout.width}x${layout.height}`;
    let drawn;
    if (card.geometry === geometry) {
      drawn = window.Plotly.react(card.plot, traces, layout, PLOT_CONFIG);
    } else {
      window.Plotly.purge(card.plot);
      card.listening = false;
      drawn = window.Plotly.newPlot(card.plot, traces, layout, PLOT_CONFIG);
    }
    card.geometry = geometry;
    return drawn.then(() => {
      if (!card.listening) this.listen(card);
    });
  }

  // Keyboard access to every cell: the plot takes focus, arrow keys move a cursor (jumping
  // over gutters), Enter or Space explains the cell under it.
  enableKeyboard(card) {
    const plot = card.plot;
    plot.tabIndex = 0;
    plot.setAttribute("role", "application");
    plot.setAttribute("aria-roledescription", "heatmap");
    plot.setAttribute("aria-label", `${plot.dataset.layerName}: arrow keys move between cells, Enter explains the cell`);
    plot.addEventListener("focus", () => {
      if (!card.model || card.model.kind === "none") return;
      if (!card.cursor || !cellAt(card.model, card.cursor.x, card.cursor.y)) card.cursor = { x: 0, y: 0 };
      this.showCursor(card);
    });
    plot.addEventListener("blur", () => this.refreshShapes(card));
    plot.addEventListener("keydown", (event) => {
      const model = card.model;
      if (!model || model.kind === "none" || !card.cursor) return;
      const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
      if (moves[event.key]) {
        const [dx, dy] = moves[event.key];
        const width = model.z[0].length;
        let { x, y } = card.cursor;
        do {
          x += dx;
          y += dy;
        } while (x >= 0 && y >= 0 && x < width && y < model.z.length && !cellAt(model, x, y));
        if (x >= 0 && y >= 0 && x < width && y < model.z.length) card.cursor = { x, y };
        this.showCursor(card);
      } else if (event.key === "Enter" || event.key === " ") {
        const cell = cellAt(model, card.cursor.x, card.cursor.y);
        if (cell) this.onCellClick(card.index, model.view, cell);
      } else {
        return;
      }
      event.preventDefault();
      event.stopPropagation();
    });
  }

  showCursor(card) {
    const cell = cellAt(card.model, card.cursor.x, card.cursor.y);
    card.readout.textContent = cell ? describeCell(card.model, cell) : "\u00a0";
    this.refreshShapes(card);
  }

  refreshShapes(card) {
    if (card.model && card.model.kind !== "none") {
      window.Plotly.relayout(card.plot, { shapes: this.selectionShapes(card, card.model) });
    }
  }

  listen(card) {
    card.listening = true;
    card.plot.on("plotly_hover", (event) => {
      const point = event.points && event.points[0];
      if (!point || !card.model) return;
      const cell = cellAt(card.model, point.x, point.y);
      card.readout.textContent = cell ? describeCell(card.model, cell) : "\u00a0";
    });
    card.plot.on("plotly_unhover", () => {
      card.readout.textContent = "\u00a0";
    });
    card.plot.on("plotly_click", (event) => {
      const point = event.points && event.points[0];
      if (!point || !card.model) return;
      const cell = cellAt(card.model, point.x, point.y);
      if (cell) this.onCellClick(card.index, card.model.view, cell);
    });
  }

  setStates(stateOf) {
    for (const card of this.cards.values()) {
      const state = stateOf(card.index);
      if (card.element.dataset.state !== state) card.element.dataset.state = state;
    }
    const arrows = this.container.querySelectorAll(".flow-arrow");
    for (const arrow of arrows) {
      const before = this.cards.get(Number(arrow.dataset.after));
      const nextIndex = Number(arrow.dataset.after) + 1;
      const after = this.cards.get(nextIndex);
      let flow = "idle";
      if (after && after.element.dataset.state === "active" && before.element.dataset.state === "done") flow = "forward";
      else if (before && before.element.dataset.state === "active" && after && after.element.dataset.state === "done") flow = "backward";
      if (arrow.dataset.flow !== flow) arrow.dataset.flow = flow;
    }
  }

  // Marks cells on cards: `marks` is a list of {index, cells: [{map, i, j}], color}, e.g. the
  // clicked cell and its receptive field on the layer before.
  mark(marks) {
    this.selection = marks;
    for (const card of this.cards.values()) this.refreshShapes(card);
  }

  selectionShapes(card, model) {
    if (model.kind === "none") return [];
    const shapes = [];
    if (card.cursor && document.activeElement === card.plot) {
      const { x, y } = card.cursor;
      shapes.push({ type: "rect", x0: x - 0.5, x1: x + 0.5, y0: y - 0.5, y1: y + 0.5, line: { color: COLORS.accent, width: 2, dash: "dot" } });
    }
    for (const mark of this.selection || []) {
      if (mark.index !== card.index || (mark.views && !mark.views.includes(model.view))) continue;
      for (const cell of mark.cells) {
        const p = cellPosition(model, cell.map ?? 0, cell.i, cell.j);
        const h = cell.h || 1;
        const w = cell.w || 1;
        shapes.push({
          type: "rect",
          x0: p.x - 0.5,
          x1: p.x - 0.5 + w,
          y0: p.y - 0.5,
          y1: p.y - 0.5 + h,
          line: { color: mark.color || COLORS.selected, width: 2 },
          fillcolor: "rgba(0,0,0,0)",
        });
      }
    }
    return shapes;
  }

  // Scrolls the strip sideways (when it scrolls: the inspector is docked) so that card
  // `index` and, when it fits, the card before it (where a receptive field is marked) are in view.
  reveal(index) {
    const strip = this.container;
    const card = this.cards.get(index);
    if (!card || strip.scrollWidth <= strip.clientWidth) return;
    const previous = this.cards.get(index - 1);
    const box = strip.getBoundingClientRect();
    const cardBox = card.element.getBoundingClientRect();
    const right = cardBox.right - box.left + strip.scrollLeft;
    let left = cardBox.left - box.left + strip.scrollLeft;
    if (previous) {
      const previousLeft = previous.element.getBoundingClientRect().left - box.left + strip.scrollLeft;
      if (right - previousLeft <= strip.clientWidth) left = previousLeft;
    }
    const visibleFrom = strip.scrollLeft;
    const visibleTo = visibleFrom + strip.clientWidth;
    if (left >= visibleFrom && right <= visibleTo) return;
    strip.scrollTo({ left: Math.max(0, left - 4) });
  }

  modelOf(index) {
    const card = this.cards.get(index);
    return card ? card.model : null;
  }

  invalidate() {
    for (const card of this.cards.values()) card.drawnKey = null;
  }
}

function nextFrame() {
  return new Promise((resolve) => requestAnimationFrame(() => resolve()));
}

function asShapeText(input) {
  const shape = [];
  let node = input;
  while (Array.isArray(node)) {
    shape.push(node.length);
    node = node[0];
  }
  return shape.join("×");
}

// The legend of a card's colour scale: the scale as a CSS gradient, labelled at both ends
// (and at zero for a signed range); per-map ranges are labelled −max/+max (min/max).
function drawColourBar(bar, model, width) {
  const [lo, hi] = model.range;
  const stops = model.colorscale.map(([at, colour]) => `${colour} ${(at * 100).toFixed(1)}%`).join(", ");
  let ticks;
  if (model.perMap) {
    ticks = model.signed ? [[0, "−max"], [0.5, "0"], [1, "+max"]] : [[0, "min"], [1, "max"]];
  } else {
    const middle = lo < 0 && hi > 0 ? 0 : (lo + hi) / 2;
    ticks = [lo, middle, hi].map((v) => [(v - lo) / (hi - lo), formatTick(v)]);
  }
  bar.style.width = `${width}px`;
  bar.hidden = false;
  bar.setAttribute("aria-label", `colour scale of ${model.colorbarTitle}: ${ticks.map((t) => t[1]).join(", ")}`);
  bar.replaceChildren();
  const ramp = document.createElement("div");
  ramp.className = "colorbar-ramp";
  ramp.style.background = `linear-gradient(to right, ${stops})`;
  const labels = document.createElement("div");
  labels.className = "colorbar-ticks";
  for (const [at, text] of ticks) {
    const label = document.createElement("span");
    label.textContent = text;
    label.style.left = `${(at * 100).toFixed(2)}%`;
    label.dataset.edge = at <= 0 ? "start" : at >= 1 ? "end" : "middle";
    labels.append(label);
  }
  bar.append(ramp, labels);
}

function formatTick(value) {
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 0.01 && magnitude < 1000) return String(Number(value.toPrecision(2)));
  return value.toExponential(0);
}

export function describeCell(model, cell) {
  const value = formatNumber(cell.value);
  if (cell.f !== undefined) return `W[${cell.f},${cell.c},${cell.r},${cell.s}] = ${value}`;
  if (cell.u !== undefined) return `[${cell.u}, ${cell.k}] = ${value}`;
  if (cell.k !== undefined) return `[${cell.k}] = ${value}`;
  return `map ${cell.map} (${cell.i}, ${cell.j}) = ${value}`;
}
