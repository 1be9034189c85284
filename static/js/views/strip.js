// Draws the network as a strip of HTML layer cards and ONE Plotly figure laid over the whole
// strip: each card's maps are a single layout image (an RGBA picture of the tiled maps made
// from the colour scale, as a PNG data URL; small maps carry their numbers painted in), placed
// over the card's plot box, and selections are layout shapes. Both are what Plotly calls
// "arraydraw" attributes: a Plotly.relayout of just the changed ones updates those few SVG
// elements and skips the data pipeline (defaults, calc, plotting every trace, measuring the
// page) that an image trace per card went through on every step -- so a redraw costs about the
// same however many cards there are, and a card's picture is repainted only when what it shows
// changes. Hover, click and keyboard are handled on each card's plot box (the figure lets
// pointer events through).

import { COLORBAR_MIN_PX, FIGURE_MARGIN, COLORS, STRIP_MIN_WIDTH_PX, PENDING_MAP_OPACITY } from "../config.js";
import { INPUT_LAYER, buildCardModel, cellAt, cellPosition, describeLayer, flatIndexAt, shownValue, viewLabel } from "./viewmodel.js";
import { formatNumber } from "../format.js";
import { LITTLE_ENDIAN, bmpDataUrl, colourLookup, colourStep, drawColourBar, hexToRgb, packedColours } from "./pictures.js";

const FIGURE_CONFIG = { staticPlot: true, displayModeBar: false, responsive: false };

export class Strip {
  constructor(container, { onCellClick }) {
    this.container = container;
    this.onCellClick = onCellClick;
    this.cards = new Map(); // layer index -> card (element, plot box, model, picture, ...)
    this.signature = null;
    this.selection = null;
    this.renderToken = 0;
    this.figure = document.createElement("div");
    this.figure.className = "strip-figure";
    this.figure.setAttribute("aria-hidden", "true");
    this.drawnFigure = null;
    this.drawing = Promise.resolve();
    this.placing = false;
    // Cards move when the strip reflows (a window resize, the inspector docking, a font
    // arriving): the figure follows on the next frame.
    // Reading positions forces the browser to lay the page out, so they are measured only when
    // something may have moved them: a card or the strip changed size (this observer, which
    // also keeps the strip's width), or a render changed a plot box's size.
    this.boxes = null;
    this.stripWidth = null;
    this.resizing = new ResizeObserver((entries) => {
      for (const entry of entries) if (entry.target === this.container) this.stripWidth = entry.contentRect.width;
      this.boxes = null;
      this.schedulePlacement();
    });
    this.resizing.observe(container);
  }

  // (Re)creates the cards when the architecture changes.
  build(trace) {
    this.closeZoom(); // its cells belonged to the record before
    const signature = JSON.stringify(trace.layers.map((l) => [l.name, l.type, l.output_shape]));
    if (signature === this.signature) return;
    this.signature = signature;
    for (const card of this.cards.values()) this.resizing.unobserve(card.element);
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
    this.container.append(this.figure);
    this.drawnFigure = null;
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
    const description = layer ? describeLayer(layer) : `${asShapeText(trace.input)} pixels in [0, 1]`;
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
    const card = {
      cursor: null,
      index,
      element,
      plot: element.querySelector('[data-role="plot"]'),
      viewTag: element.querySelector('[data-role="view"]'),
      note: element.querySelector('[data-role="note"]'),
      colorbar: element.querySelector('[data-role="colorbar"]'),
      readout: element.querySelector('[data-role="readout"]'),
      model: null,
      drawnKey: null,
      picture: null, // {source, texts}
    };
    this.cards.set(index, card);
    this.enableKeyboard(card);
    this.enablePointer(card);
    this.resizing.observe(element);
    return element;
  }

  // The strip's width for sizing maps; never below STRIP_MIN_WIDTH_PX, so a strip narrowed by
  // the docked inspector (where it scrolls sideways) keeps its maps' tiling and cell size.
  availableWidth() {
    if (this.stripWidth === null) this.stripWidth = this.container.clientWidth;
    const width = Math.max(this.stripWidth || 900, STRIP_MIN_WIDTH_PX);
    return Math.max(120, width - 24 - FIGURE_MARGIN.l - FIGURE_MARGIN.r);
  }

  // Draws every card for `viewOf(index)`; resolves true when the figure shows them all (false
  // when a newer render took over). Cards whose view, record and options are unchanged keep
  // their picture; the figure is then drawn once.
  async render(record, viewOf, options) {
    const token = ++this.renderToken;
    const maxWidth = this.availableWidth();
    for (const card of this.cards.values()) {
      const view = viewOf(card.index);
      const key = `${record.id}|${view}|${options.perMap}|${options.markWinners}|${options.gradients}|${maxWidth}`;
      if (card.drawnKey === key) continue;
      const model = buildCardModel(record, card.index, view, { ...options, maxWidth });
      // A readout names one quantity: it goes when the card shows another one.
      const quantity = `${view}|${options.gradients}`;
      if (card.quantity !== quantity) {
        card.quantity = quantity;
        card.readout.textContent = "\u00a0";
      }
      card.model = model;
      card.drawnKey = key;
      const tag = (model.colorbarTitle || "") + gradientTag(model) + (model.perMap ? " · per map" : "");
      if (card.viewTag.textContent !== tag) {
        card.viewTag.textContent = tag;
        this.boxes = null; // the card's header may have changed its width
      }
      card.viewTag.title = viewLabel(view) + (model.gradientSource === "batch" ? ": the mean over the mini-batch, what the update applied" : model.gradientSource === "sample" ? ": this image's own gradient" : "");
      card.element.dataset.view = view;
      card.element.dataset.gradient = model.gradientSource || "";
      if (model.kind === "none") {
        if (!card.plot.hidden) this.boxes = null;
        card.plotSize = null;
        card.note.textContent = model.note;
        card.note.hidden = false;
        card.plot.hidden = true;
        card.colorbar.hidden = true;
        card.element.dataset.empty = "true";
        card.picture = null;
        continue;
      }
      card.note.hidden = true;
      if (card.plot.hidden) this.boxes = null;
      card.plot.hidden = false;
      card.element.dataset.empty = "false";
      const width = Math.round(model.plotWidth + FIGURE_MARGIN.l + FIGURE_MARGIN.r);
      const height = Math.round(model.plotHeight + FIGURE_MARGIN.t + FIGURE_MARGIN.b);
      const size = `${width}x${height}`;
      if (card.plotSize !== size) {
        card.plotSize = size;
        card.plot.style.width = `${width}px`;
        card.plot.style.height = `${height}px`;
        this.boxes = null;
      }
      drawColourBar(card.colorbar, model, Math.max(width, COLORBAR_MIN_PX));
      card.picture = this.paint(model);
      if (card.cursor) this.showCursor(card, false);
    }
    await this.place();
    if (token !== this.renderToken) return false;
    // The numbers change with the figure that shows their pictures, not a draw before it.
    for (const card of this.cards.values()) this.showNumbers(card);
    return true;
  }

  // The card's picture, as a data URL for a Plotly layout image (a data URL is set on the SVG
  // image as it is; Plotly would load any other URL through a canvas first): an uncompressed
  // BMP written straight from the pixels, which costs a copy where a canvas's PNG costs a
  // compression on every step. Normally one RGBA pixel per cell from the colour scale
  // (gutters transparent), scaled up by the browser. With max-pool winners marked, every cell
  // is `scale` × `scale` pixels and a winner gets an outline in the winner colour (the cells
  // keep the colour bar's colours). A small map's numbers are not in its picture: `texts` says
  // what each printed cell shows and in which colour, and `showNumbers` writes them over it.
  paint(model) {
    const lookup = colourLookup(model.colorscale);
    const winners = model.winners ? model.winners.mask : null;
    const [lo, hi] = model.range;
    const span = hi - lo || 1;
    const texts = model.showText ? cellTexts(model, lookup, lo, span) : null;
    const scale = winners ? Math.max(3, Math.min(WINNER_MAX_SCALE, Math.round(Math.min(model.cellW, model.cellH)))) : 1;
    const width = model.widthCells;
    const height = model.heightCells;
    const rowPixels = width * scale;
    const pixels = new Uint8ClampedArray(rowPixels * height * scale * 4); // transparent
    if (scale === 1 && LITTLE_ENDIAN) {
      // The usual picture, one pixel per cell: one 32-bit store per cell from a table of packed
      // colours, over a cached cell -> element index, without a call per cell.
      paintCells(model, new Uint32Array(pixels.buffer), packedColours(lookup), lo, span);
      return { source: bmpDataUrl(pixels, width, height), texts, scale, id: ++paintCount };
    }
    const edgeWidth = Math.max(1, Math.round(scale / WINNER_MAX_SCALE));
    const [wr, wg, wb] = hexToRgb(COLORS.winner);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const k = flatIndexAt(model, x, y);
        if (k < 0) continue;
        const value = shownValue(model, k);
        if (!Number.isFinite(value)) continue;
        const t = colourStep(value, lo, span) * 3;
        const outlined = winners && winners[k];
        for (let sy = 0; sy < scale; sy++) {
          for (let sx = 0; sx < scale; sx++) {
            const edge = outlined && (sx < edgeWidth || sy < edgeWidth || sx >= scale - edgeWidth || sy >= scale - edgeWidth);
            const p = ((y * scale + sy) * rowPixels + x * scale + sx) * 4;
            pixels[p] = edge ? wr : lookup[t];
            pixels[p + 1] = edge ? wg : lookup[t + 1];
            pixels[p + 2] = edge ? wb : lookup[t + 2];
            pixels[p + 3] = 255;
          }
        }
      }
    }
    return { source: bmpDataUrl(pixels, rowPixels, height * scale), texts, scale, id: ++paintCount };
  }

  // Writes a card's numbers (its picture's `texts`) over its picture: one element per printed
  // cell, rebuilt only when the cells printed or their size change, otherwise only the numbers
  // and colours that changed. Text over the figure rather than painted into the picture: that
  // took a canvas, a read-back and a picture at the screen's resolution, and the output column's
  // alone cost a fifth of a Step's drawing.
  showNumbers(card) {
    const texts = card.picture ? card.picture.texts : null;
    let layer = card.numbers;
    if (!texts) {
      if (layer) layer.hidden = true;
      return;
    }
    if (!layer) {
      layer = card.numbers = document.createElement("div");
      layer.className = "cell-numbers";
      layer.setAttribute("aria-hidden", "true"); // the readout and inspector say the numbers
      card.plot.append(layer);
    }
    layer.hidden = false;
    const model = card.model;
    const cells = `${model.cellW}|${model.cellH}|${texts.x.join(",")}|${texts.y.join(",")}`;
    if (layer.dataset.cells !== cells) {
      layer.dataset.cells = cells;
      layer.replaceChildren(...texts.x.map((x, n) => {
        const number = document.createElement("span");
        number.style.left = `${FIGURE_MARGIN.l + x * model.cellW}px`;
        number.style.top = `${FIGURE_MARGIN.t + texts.y[n] * model.cellH}px`;
        number.style.width = `${model.cellW}px`;
        number.style.height = number.style.lineHeight = `${model.cellH}px`;
        return number;
      }));
    }
    const numbers = layer.children;
    for (let n = 0; n < texts.text.length; n++) {
      const number = numbers[n];
      if (number.textContent !== texts.text[n]) number.textContent = texts.text[n];
      if (number.dataset.color !== texts.color[n]) {
        number.dataset.color = texts.color[n];
        number.style.color = texts.color[n];
      }
    }
  }


  schedulePlacement() {
    if (this.placing) return;
    this.placing = true;
    requestAnimationFrame(() => {
      this.placing = false;
      this.place();
    });
  }

  // Where each card's plot box is in the strip's scrolled content, in CSS pixels.
  plotBoxes() {
    if (this.boxes) return this.boxes;
    const strip = this.container.getBoundingClientRect();
    const left0 = strip.left + this.container.clientLeft - this.container.scrollLeft;
    const top0 = strip.top + this.container.clientTop - this.container.scrollTop;
    const boxes = new Map();
    for (const card of this.cards.values()) {
      if (!card.picture || card.plot.hidden) continue;
      const box = card.plot.getBoundingClientRect();
      boxes.set(card.index, { left: box.left - left0 + FIGURE_MARGIN.l, top: box.top - top0 + FIGURE_MARGIN.t });
    }
    this.boxes = boxes;
    return boxes;
  }

  // Draws the one figure: every card's picture at its plot box, the numbers of small maps,
  // the selection outlines and the keyboard cursor. Skipped when nothing about it changed.
  place() {
    const boxes = this.plotBoxes();
    const images = [];
    const shapes = [];
    let width = 1;
    let height = 1;
    const signature = [];
    const order = [];
    for (const card of this.cards.values()) {
      const box = boxes.get(card.index);
      if (!box) continue;
      order.push(card.index);
      const model = card.model;
      const opacity = card.element.dataset.state === "pending" ? PENDING_MAP_OPACITY : 1;
      images.push({
        source: card.picture.source,
        xref: "x",
        yref: "y",
        x: box.left,
        y: box.top,
        sizex: model.widthCells * model.cellW,
        sizey: model.heightCells * model.cellH,
        xanchor: "left",
        yanchor: "top",
        sizing: "stretch",
        layer: "below",
        opacity,
      });
      for (const shape of this.selectionShapes(card, model)) {
        shapes.push({ ...shape, x0: box.left + shape.x0 * model.cellW, x1: box.left + shape.x1 * model.cellW, y0: box.top + shape.y0 * model.cellH, y1: box.top + shape.y1 * model.cellH });
      }
      width = Math.max(width, box.left + model.plotWidth + FIGURE_MARGIN.r);
      height = Math.max(height, box.top + model.plotHeight + FIGURE_MARGIN.b);
      signature.push(card.picture.id, Math.round(box.left), Math.round(box.top), opacity);
    }
    width = Math.ceil(width);
    height = Math.ceil(height);
    signature.push(width, height, JSON.stringify(shapes));
    const key = signature.join(",");
    if (key === this.drawnFigure) return this.drawing;
    this.drawnFigure = key;
    this.figureOrder = order;
    this.figure.style.width = `${width}px`;
    this.figure.style.height = `${height}px`;
    const layout = {
      width,
      height,
      margin: { l: 0, r: 0, t: 0, b: 0, pad: 0 },
      xaxis: { visible: false, range: [0, width], fixedrange: true },
      yaxis: { visible: false, range: [height, 0], fixedrange: true },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      showlegend: false,
      images,
      shapes,
    };
    this.figureDraws = (this.figureDraws || 0) + 1;
    // Usually only pictures, their places or outlines changed: then a relayout of just those
    // attributes, which Plotly applies to the few SVG elements concerned without measuring the
    // page or revisiting anything else; a new figure size or number of pictures goes through a
    // whole react (the figure has no traces: everything it shows is layout images and shapes).
    const previous = this.drawnLayout;
    const sameFrame = previous && previous.width === width && previous.height === height && previous.images.length === images.length;
    const edits = sameFrame ? changedAttributes(previous, layout) : null;
    this.drawnLayout = layout;
    if (!edits) this.wholeDraws = (this.wholeDraws || 0) + 1; // for tests: how often the figure was rebuilt
    const draw = edits ? () => window.Plotly.relayout(this.figure, edits) : () => window.Plotly.react(this.figure, [], layout, FIGURE_CONFIG);
    // One draw at a time, in order: a figure is never drawn over by an older one.
    this.drawing = this.drawing.then(draw, draw);
    return this.drawing;
  }

  // The cell under a pointer event on a card's plot box.
  cellFromEvent(card, event) {
    const model = card.model;
    if (!model || model.kind === "none") return null;
    const box = card.plot.getBoundingClientRect();
    const x = Math.floor((event.clientX - box.left - FIGURE_MARGIN.l) / model.cellW);
    const y = Math.floor((event.clientY - box.top - FIGURE_MARGIN.t) / model.cellH);
    return cellAt(model, x, y);
  }

  enablePointer(card) {
    card.plot.addEventListener("mousemove", (event) => {
      const cell = this.cellFromEvent(card, event);
      card.readout.textContent = cell ? describeCell(card.model, cell) : "\u00a0";
    });
    card.plot.addEventListener("mouseleave", () => {
      card.readout.textContent = "\u00a0";
    });
    card.plot.addEventListener("click", (event) => {
      const cell = this.cellFromEvent(card, event);
      if (!cell) return;
      if (needsZoom(card.model)) this.openZoom(card, event);
      else this.onCellClick(card.index, card.model.view, cell);
    });
  }

  // A weight matrix drawn with cells a few pixels (or less) wide cannot be clicked on one
  // weight: a click opens a magnified window of the cells around it, where one is picked.
  openZoom(card, event) {
    this.closeZoom();
    const model = card.model;
    const box = card.plot.getBoundingClientRect();
    const x = Math.floor((event.clientX - box.left - FIGURE_MARGIN.l) / model.cellW);
    const y = Math.floor((event.clientY - box.top - FIGURE_MARGIN.t) / model.cellH);
    const cols = Math.min(ZOOM_CELLS, model.widthCells);
    const rows = Math.min(ZOOM_CELLS, model.heightCells);
    const col0 = Math.max(0, Math.min(model.widthCells - cols, x - Math.floor(cols / 2)));
    const row0 = Math.max(0, Math.min(model.heightCells - rows, y - Math.floor(rows / 2)));
    const zoom = document.createElement("div");
    zoom.className = "weight-zoom";
    zoom.setAttribute("role", "dialog");
    zoom.setAttribute("aria-label", "Magnified weights: click one to explain it");
    zoom.dataset.row0 = String(row0);
    zoom.dataset.col0 = String(col0);
    zoom.dataset.rows = String(rows);
    zoom.dataset.cols = String(cols);
    const name = model.colorbarTitle || model.view;
    const head = document.createElement("p");
    head.className = "weight-zoom-head";
    head.textContent = `${card.plot.dataset.layerName} · ${name} rows ${row0}–${row0 + rows - 1}, columns ${col0}–${col0 + cols - 1}: click one weight`;
    const close = document.createElement("button");
    close.type = "button";
    close.className = "ghost";
    close.textContent = "Close";
    close.addEventListener("click", () => this.closeZoom());
    head.append(" ", close);
    const canvas = document.createElement("canvas");
    canvas.width = cols * ZOOM_CELL_PX;
    canvas.height = rows * ZOOM_CELL_PX;
    const context = canvas.getContext("2d");
    const lookup = colourLookup(model.colorscale);
    const [lo, hi] = model.range;
    const span = hi - lo || 1;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const k = flatIndexAt(model, col0 + c, row0 + r);
        if (k < 0) continue;
        const t = Math.max(0, Math.min(255, Math.round(((shownValue(model, k) - lo) / span) * 255))) * 3;
        context.fillStyle = `rgb(${lookup[t]},${lookup[t + 1]},${lookup[t + 2]})`;
        context.fillRect(c * ZOOM_CELL_PX, r * ZOOM_CELL_PX, ZOOM_CELL_PX - 1, ZOOM_CELL_PX - 1);
      }
    }
    const cellUnder = (move) => {
      const area = canvas.getBoundingClientRect();
      const c = Math.floor(((move.clientX - area.left) / area.width) * cols);
      const r = Math.floor(((move.clientY - area.top) / area.height) * rows);
      return c >= 0 && r >= 0 && c < cols && r < rows ? cellAt(model, col0 + c, row0 + r) : null;
    };
    const readout = document.createElement("p");
    readout.className = "weight-zoom-readout";
    readout.textContent = "\u00a0";
    canvas.addEventListener("mousemove", (move) => {
      const cell = cellUnder(move);
      readout.textContent = cell ? describeCell(model, cell) : "\u00a0";
    });
    canvas.addEventListener("click", (pick) => {
      const cell = cellUnder(pick);
      if (!cell) return;
      this.closeZoom();
      this.onCellClick(card.index, model.view, cell);
    });
    zoom.append(head, canvas, readout);
    document.body.append(zoom);
    const width = zoom.offsetWidth;
    const height = zoom.offsetHeight;
    zoom.style.left = `${Math.max(4, Math.min(window.innerWidth - width - 4, event.clientX + 12))}px`;
    zoom.style.top = `${Math.max(4, Math.min(window.innerHeight - height - 4, event.clientY - height / 2))}px`;
    this.zoom = zoom;
    this.zoomKeys = (key) => {
      if (key.key === "Escape") this.closeZoom();
    };
    document.addEventListener("keydown", this.zoomKeys);
    close.focus();
  }

  closeZoom() {
    if (!this.zoom) return;
    this.zoom.remove();
    this.zoom = null;
    document.removeEventListener("keydown", this.zoomKeys);
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
    plot.addEventListener("blur", () => this.schedulePlacement());
    plot.addEventListener("keydown", (event) => {
      const model = card.model;
      if (!model || model.kind === "none" || !card.cursor) return;
      const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
      if (moves[event.key]) {
        const [dx, dy] = moves[event.key];
        const width = model.widthCells;
        const height = model.heightCells;
        let { x, y } = card.cursor;
        do {
          x += dx;
          y += dy;
        } while (x >= 0 && y >= 0 && x < width && y < height && !cellAt(model, x, y));
        if (x >= 0 && y >= 0 && x < width && y < height) card.cursor = { x, y };
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

  showCursor(card, redraw = true) {
    const cell = cellAt(card.model, card.cursor.x, card.cursor.y);
    card.readout.textContent = cell ? describeCell(card.model, cell) : "\u00a0";
    if (redraw) this.schedulePlacement();
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
    return this.place();
  }

  // Outlines in a card's cell units (cell (x, y) spans x..x+1, y..y+1).
  selectionShapes(card, model) {
    if (!model || model.kind === "none") return [];
    const shapes = [];
    if (card.cursor && document.activeElement === card.plot) {
      const { x, y } = card.cursor;
      shapes.push({ type: "rect", x0: x, x1: x + 1, y0: y, y1: y + 1, line: { color: COLORS.accent, width: 2, dash: "dot" } });
    }
    for (const mark of this.selection || []) {
      if (mark.index !== card.index || (mark.views && !mark.views.includes(model.view))) continue;
      for (const cell of mark.cells) {
        const p = cellPosition(model, cell.map ?? 0, cell.i, cell.j);
        shapes.push({
          type: "rect",
          x0: p.x,
          x1: p.x + (cell.w || 1),
          y0: p.y,
          y1: p.y + (cell.h || 1),
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

  // A card's view model without its arrays (for tests and the benchmark to read).
  modelOf(index) {
    const card = this.cards.get(index);
    if (!card || !card.model) return null;
    const { data, winners, ranges, ...rest } = card.model;
    return { ...rest, winnerCount: winners ? winners.count : 0 };
  }

  // What a card's picture shows, as rows of cells (null on gutters): the array's values, or
  // their place in their map's range with per-map colour ranges.
  shownMatrix(index) {
    const card = this.cards.get(index);
    const model = card && card.model;
    if (!model || model.kind === "none" || card.plot.hidden) return null;
    return Array.from({ length: model.heightCells }, (_, y) =>
      Array.from({ length: model.widthCells }, (_, x) => {
        const k = flatIndexAt(model, x, y);
        return k < 0 ? null : shownValue(model, k);
      }),
    );
  }

  // Page coordinates of the middle of cell (x, y) of a card, and the value drawn there.
  cellPoint(index, x, y) {
    const card = this.cards.get(index);
    const box = card.plot.getBoundingClientRect();
    const model = card.model;
    const k = flatIndexAt(model, x, y);
    return { x: box.left + FIGURE_MARGIN.l + (x + 0.5) * model.cellW, y: box.top + FIGURE_MARGIN.t + (y + 0.5) * model.cellH, value: k < 0 ? null : model.data[k] };
  }

  // Page box of the image Plotly drew for a card.
  imageBox(index) {
    const n = (this.figureOrder || []).indexOf(index);
    const image = n < 0 ? null : this.figure.querySelectorAll("image")[n];
    if (!image) return null;
    const box = image.getBoundingClientRect();
    return { left: box.left, top: box.top, width: box.width, height: box.height };
  }

  // Page box of a card's first outline in `color` (the clicked cell's, by default).
  outlineBox(index, color = COLORS.selected) {
    const card = this.cards.get(index);
    if (!card || !card.model) return null;
    const shape = this.selectionShapes(card, card.model).find((s) => s.line && s.line.color === color);
    if (!shape) return null;
    const box = card.plot.getBoundingClientRect();
    const left = box.left + FIGURE_MARGIN.l;
    const top = box.top + FIGURE_MARGIN.t;
    return { left: left + shape.x0 * card.model.cellW, right: left + shape.x1 * card.model.cellW, top: top + shape.y0 * card.model.cellH, bottom: top + shape.y1 * card.model.cellH };
  }

  invalidate() {
    for (const card of this.cards.values()) card.drawnKey = null;
  }
}

let paintCount = 0;

const IMAGE_ATTRIBUTES = ["source", "x", "y", "sizex", "sizey", "opacity"];

// Writes each cell's colour as one word: words[p] for the cell at pixel p of the picture.
function paintCells(model, words, colours, lo, span) {
  const index = cellIndex(model);
  const data = model.data;
  const plane = model.mapH * model.mapW;
  const ranges = model.perMap ? model.ranges : null;
  for (let p = 0; p < index.length; p++) {
    const k = index[p];
    if (k < 0) continue;
    let value = data[k];
    if (ranges) {
      const [mapLo, mapHi] = ranges[Math.floor(k / plane)];
      value = (value - mapLo) / (mapHi - mapLo);
    }
    if (!Number.isFinite(value)) continue;
    words[p] = colours[colourStep(value, lo, span)];
  }
}

// The element index of every cell of a model's tiled picture (-1 on gutters), row by row: the
// same for every step of a layer and view, so it is made once per layout.
const cellIndices = new Map();
function cellIndex(model) {
  const key = `${model.kind}|${model.widthCells}|${model.heightCells}|${model.mapW}|${model.mapH}|${model.cols}|${model.count}|${model.size}`;
  let index = cellIndices.get(key);
  if (!index) {
    index = new Int32Array(model.widthCells * model.heightCells);
    for (let y = 0; y < model.heightCells; y++) {
      for (let x = 0; x < model.widthCells; x++) index[y * model.widthCells + x] = flatIndexAt(model, x, y);
    }
    if (cellIndices.size > 64) cellIndices.clear();
    cellIndices.set(key, index);
  }
  return index;
}

// What a small map prints in its cells: {x, y, text, color} per finite cell, row by row, the
// colour dark or light against the cell's own.
function cellTexts(model, lookup, lo, span) {
  const texts = { x: [], y: [], text: [], color: [] };
  for (let y = 0; y < model.heightCells; y++) {
    for (let x = 0; x < model.widthCells; x++) {
      const k = flatIndexAt(model, x, y);
      if (k < 0) continue;
      const value = shownValue(model, k);
      if (!Number.isFinite(value)) continue;
      const t = colourStep(value, lo, span) * 3;
      texts.x.push(x);
      texts.y.push(y);
      texts.text.push(model.classLabels ? `${k}: ${cellText(value)}` : cellText(value));
      texts.color.push(0.299 * lookup[t] + 0.587 * lookup[t + 1] + 0.114 * lookup[t + 2] > 140 ? "#1d2433" : "#ffffff");
    }
  }
  return texts;
}

// The relayout that turns the figure drawn with layout `before` into `after` (same size):
// only the image attributes and outlines that differ.
function changedAttributes(before, after) {
  const edits = {};
  after.images.forEach((image, n) => {
    for (const name of IMAGE_ATTRIBUTES) {
      if (image[name] !== before.images[n][name]) edits[`images[${n}].${name}`] = image[name];
    }
  });
  if (JSON.stringify(after.shapes) !== JSON.stringify(before.shapes)) edits.shapes = after.shapes;
  return edits;
}

// A weight matrix whose cells are narrower or shorter than ZOOM_BELOW_PX opens a magnified
// window of ZOOM_CELLS × ZOOM_CELLS cells, each ZOOM_CELL_PX wide, to pick one weight from.
const ZOOM_BELOW_PX = 6;
const ZOOM_CELLS = 16;
const ZOOM_CELL_PX = 14;

function needsZoom(model) {
  return Boolean(model && model.kind === "matrix" && (model.cellW < ZOOM_BELOW_PX || model.cellH < ZOOM_BELOW_PX));
}

// A winner's outline is one picture pixel wide: a cell is painted this many pixels at most.
const WINNER_MAX_SCALE = 8;

// A number short enough for its cell (at most 5 characters), its sign always kept: 0.31,
// -0.07, -.004 for thousandths, -4e-5 below; 0 only for an exact zero.
export function cellText(value) {
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 100) return value.toExponential(0).replace("+", "");
  if (magnitude >= 10) return value.toFixed(0);
  if (magnitude >= 0.01) return value.toFixed(2);
  if (magnitude >= 0.001) return value.toFixed(3).replace("0.", ".");
  return value.toExponential(0);
}

function gradientTag(model) {
  if (model.gradientSource === "batch") return " · batch mean";
  if (model.gradientSource === "sample") return " · this image";
  return "";
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

// "δ[0,2,3] = 0.012": the readout names the quantity the card shows (x, a, z, δ, W, dW, db, ΔW …).
export function describeCell(model, cell) {
  const name = model.index === INPUT_LAYER && (model.view === "a" || model.view === "z") ? "x" : model.colorbarTitle || model.view;
  const value = formatNumber(cell.value);
  if (cell.f !== undefined) return `${name}[${cell.f},${cell.c},${cell.r},${cell.s}] = ${value}`;
  if (cell.u !== undefined) return `${name}[${cell.u},${cell.k}] = ${value}`;
  if (cell.k !== undefined) return `${name}[${cell.k}] = ${value}`;
  return `${name}[${cell.map},${cell.i},${cell.j}] = ${value}`;
}
