// The mini-batch of the last step: every digit with its label, the network's prediction and
// its loss before the update, the traced one (sample 0) marked. A given input (the chosen
// digit, a drawing, an upload) is sample 0 and is drawn from its own pixels; the other digits'
// thumbnails come from GET /api/mnist (train split), fetched once and kept.

import { api } from "./api.js";
import { paintPixels } from "./inputs.js";
import { formatNumber } from "./format.js";

const MAX_PAGE = 500; // the MNIST listing's largest page

export class BatchStrip {
  constructor(container, { onError }) {
    this.container = container;
    this.onError = onError;
    this.thumbnails = new Map(); // train index -> 28x28 pixels
    this.shown = null;
  }

  clear() {
    this.shown = null;
    this.container.hidden = true;
    this.container.querySelector('[data-role="batch-items"]').replaceChildren();
  }

  // step: a step answer; input: the page's current input (sample 0 when the batch has no
  // index for it). With `thumbnails` false (live training), digits not yet fetched stay blank
  // until a later step shows them.
  show(step, input, { thumbnails = true } = {}) {
    const batch = step.batch || { indices: step.batch_indices || [], labels: [], losses: [], predicted: [] };
    const indices = batch.indices || [];
    this.shown = { batch, input };
    const items = this.container.querySelector('[data-role="batch-items"]');
    const cells = indices.map((index, n) => {
      const item = document.createElement("figure");
      item.className = "batch-item";
      item.dataset.sample = String(n);
      if (index !== null && index !== undefined) item.dataset.index = String(index);
      const label = batch.labels ? batch.labels[n] : undefined;
      const predicted = batch.predicted ? batch.predicted[n] : undefined;
      if (label !== undefined && predicted !== undefined) item.dataset.correct = String(label === predicted);
      if (n === 0) item.dataset.traced = "true";
      const canvas = document.createElement("canvas");
      canvas.width = 28;
      canvas.height = 28;
      const caption = document.createElement("figcaption");
      const source = index === null || index === undefined ? "given input" : `train #${index}`;
      const loss = batch.losses ? batch.losses[n] : undefined;
      caption.innerHTML = `<span class="batch-label">${label ?? "?"}→${predicted ?? "?"}</span><span class="batch-loss">${loss === undefined ? "" : formatNumber(loss)}</span>`;
      item.title = `sample ${n}${n === 0 ? " (traced)" : ""}: ${source}, label ${label ?? "?"}, predicted ${predicted ?? "?"}${loss === undefined ? "" : `, loss ${loss}`}`;
      item.append(canvas, caption);
      if (index === null || index === undefined) {
        if (n === 0 && input && input.pixels) paintPixels(canvas, input.pixels);
      } else if (this.thumbnails.has(index)) {
        paintPixels(canvas, this.thumbnails.get(index));
      }
      return item;
    });
    items.replaceChildren(...cells);
    const mean = batch.losses && batch.losses.length ? batch.losses.reduce((a, b) => a + b, 0) / batch.losses.length : null;
    const correct = batch.labels && batch.predicted && batch.labels.length ? batch.labels.filter((l, n) => l === batch.predicted[n]).length : null;
    const given = indices[0] === null || indices[0] === undefined;
    this.container.querySelector('[data-role="batch-summary"]').textContent =
      `Step ${step.step}: ${indices.length} digits` +
      (correct === null ? "" : `, ${correct} predicted right`) +
      (mean === null ? "" : `, mean loss ${formatNumber(mean)} (= the batch loss)`) +
      `. Your input is sample 1 of the batch (marked; the one traced above)${given ? "" : ", drawn from the training set like the others"}; label→prediction and loss before the update.`;
    this.container.hidden = false;
    if (thumbnails) this.fetchThumbnails(indices).catch((error) => this.onError(error));
  }

  async fetchThumbnails(indices) {
    const missing = indices.filter((index) => index !== null && index !== undefined && !this.thumbnails.has(index));
    if (missing.length === 0) return;
    const low = Math.min(...missing);
    const high = Math.max(...missing);
    if (high - low < MAX_PAGE) {
      const page = await api.mnistPage("train", low, high - low + 1);
      for (const item of page.items) this.thumbnails.set(item.index, item.pixels);
    } else {
      const items = await Promise.all(missing.map((index) => api.mnistSample("train", index)));
      for (const item of items) this.thumbnails.set(item.index, item.pixels);
    }
    for (const item of this.container.querySelectorAll(".batch-item[data-index]")) {
      const pixels = this.thumbnails.get(Number(item.dataset.index));
      if (pixels) paintPixels(item.querySelector("canvas"), pixels);
    }
  }
}
