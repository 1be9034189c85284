// The mini-batch of the last step: every digit with its label, the network's prediction and
// its loss before the update, the traced one (sample 0) marked. A given input (the chosen
// digit, a drawing, an upload) is sample 0 and is drawn from its own pixels; the other digits'
// thumbnails come from GET /api/mnist (train split), fetched once and kept.

import { api } from "../server/api.js";
import { paintPixels } from "../setup/inputs.js";
import { formatNumber } from "../format.js";

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
  }

  // step: a step answer; input: the page's current input (sample 0 when the batch has no
  // index for it). With `thumbnails` false, digits not yet fetched stay blank until
  // `fetchShown` (the page calls it once a step's maps are drawn, and after a live Play). The items are reused from step to step:
  // only what changed is written, and a thumbnail is painted only when its digit changes.
  show(step, input, { thumbnails = true } = {}) {
    const batch = step.batch || { indices: step.batch_indices || [], labels: [], losses: [], predicted: [] };
    const indices = batch.indices || [];
    this.shown = { batch, input };
    const list = this.container.querySelector('[data-role="batch-items"]');
    while (list.children.length > indices.length) list.lastElementChild.remove();
    while (list.children.length < indices.length) list.append(newItem(list.children.length));
    indices.forEach((index, n) => {
      const item = list.children[n];
      const given = index === null || index === undefined;
      const label = batch.labels ? batch.labels[n] : undefined;
      const predicted = batch.predicted ? batch.predicted[n] : undefined;
      const loss = batch.losses ? batch.losses[n] : undefined;
      setData(item, "index", given ? undefined : String(index));
      setData(item, "correct", label !== undefined && predicted !== undefined ? String(label === predicted) : undefined);
      setText(item.querySelector(".batch-label"), `${label ?? "?"}→${predicted ?? "?"}`);
      setText(item.querySelector(".batch-loss"), loss === undefined ? "" : formatNumber(loss));
      item.title = `sample ${n}${n === 0 ? " (traced)" : ""}: ${given ? "given input" : `train #${index}`}, label ${label ?? "?"}, predicted ${predicted ?? "?"}${loss === undefined ? "" : `, loss ${loss}`}`;
      const canvas = item.querySelector("canvas");
      if (given) {
        const pixels = n === 0 && input ? input.pixels : null;
        if (canvas.painted !== pixels) {
          if (pixels) paintPixels(canvas, pixels);
          else canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
          canvas.painted = pixels;
        }
      } else if (canvas.painted !== index) {
        if (this.thumbnails.has(index)) {
          paintPixels(canvas, this.thumbnails.get(index));
          canvas.painted = index;
        } else {
          canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
          canvas.painted = null;
        }
      }
    });
    const mean = batch.losses && batch.losses.length ? batch.losses.reduce((a, b) => a + b, 0) / batch.losses.length : null;
    const correct = batch.labels && batch.predicted && batch.labels.length ? batch.labels.filter((l, n) => l === batch.predicted[n]).length : null;
    const given = indices[0] === null || indices[0] === undefined;
    setText(
      this.container.querySelector('[data-role="batch-summary"]'),
      `Step ${step.step}: ${indices.length} digits` +
        (correct === null ? "" : `, ${correct} predicted right`) +
        (mean === null ? "" : `, mean loss ${formatNumber(mean)} (= the batch loss)`) +
        `. Your input is sample 1 of the batch (marked; the one traced above)${given ? "" : ", drawn from the training set like the others"}; label→prediction and loss before the update.`,
    );
    if (this.container.hidden) this.container.hidden = false;
    if (thumbnails) this.fetchShown();
  }

  // The thumbnails of the batch on show that are not on the page yet.
  fetchShown() {
    if (this.shown) this.fetchThumbnails(this.shown.batch.indices || []).catch((error) => this.onError(error));
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
      const index = Number(item.dataset.index);
      const canvas = item.querySelector("canvas");
      if (canvas.painted !== index && this.thumbnails.has(index)) {
        paintPixels(canvas, this.thumbnails.get(index));
        canvas.painted = index;
      }
    }
  }
}

function newItem(n) {
  const item = document.createElement("figure");
  item.className = "batch-item";
  item.setAttribute("role", "listitem");
  item.dataset.sample = String(n);
  if (n === 0) item.dataset.traced = "true";
  const canvas = document.createElement("canvas");
  canvas.width = 28;
  canvas.height = 28;
  const caption = document.createElement("figcaption");
  caption.innerHTML = '<span class="batch-label"></span><span class="batch-loss"></span>';
  item.append(canvas, caption);
  return item;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setData(node, key, value) {
  if (value === undefined) delete node.dataset[key];
  else if (node.dataset[key] !== value) node.dataset[key] = value;
}
