// The held-out evaluation as pictures: the confusion matrix the server counted (a Plotly
// heatmap: each cell prints its count, coloured by its share of the true class's row) and a
// gallery of the misclassified test digits it listed; clicking one traces it.

import { api } from "../server/api.js";
import { CONFUSION_SCALE } from "../config.js";
import { paintPixels } from "../setup/inputs.js";

const PLOT_CONFIG = { displayModeBar: false, responsive: true, doubleClick: false, scrollZoom: false };
const FONT = { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 11, color: "#1d2433" };
const MNIST_PAGE_MAX = 500; // the MNIST listing's largest page

// The classes' names: digits, or for a single-output network "not d" / "d".
export function classNames(answer, positiveClass) {
  if (answer.classes === 2 && positiveClass !== null && positiveClass !== undefined) return [`not ${positiveClass}`, String(positiveClass)];
  return Array.from({ length: answer.classes }, (_, k) => String(k));
}

export class EvaluationPanel {
  constructor(container, { onChoose, onError }) {
    this.container = container;
    this.onChoose = onChoose;
    this.onError = onError;
    this.plot = container.querySelector('[data-role="confusion-plot"]');
    this.gallery = container.querySelector('[data-role="misclassified"]');
    this.summary = container.querySelector('[data-role="evaluation-summary"]');
    this.thumbnails = new Map(); // test index -> 28x28 pixels
    this.shown = null;
  }

  clear() {
    this.shown = null;
    this.container.hidden = true;
    this.gallery.replaceChildren();
    if (this.plot.data) window.Plotly.purge(this.plot);
  }

  // answer: POST …/evaluate's answer; positiveClass: the session's, for a single output.
  async show(answer, positiveClass) {
    this.shown = answer;
    this.container.hidden = false;
    const names = classNames(answer, positiveClass);
    const listed = answer.misclassified.length;
    this.summary.textContent =
      `Step ${answer.step}: ${answer.samples} test digits, ${answer.misclassified_count} misclassified. ` +
      "Rows: the true class; columns: the prediction; colour: the share of the row. " +
      (listed === 0 ? "" : `Below, ${listed < answer.misclassified_count ? `the first ${listed}` : "all"} misclassified digits: click one to trace it.`);
    this.drawGallery(answer, names);
    await this.drawMatrix(answer, names);
    this.fetchThumbnails(answer.misclassified.map((item) => item.index)).catch((error) => this.onError(error));
  }

  drawMatrix(answer, names) {
    const counts = answer.confusion;
    const shares = counts.map((row) => {
      const total = row.reduce((a, b) => a + b, 0);
      return row.map((count) => (total ? count / total : 0));
    });
    const hover = counts.map((row, t) => row.map((count, p) => `true ${names[t]}, predicted ${names[p]}: ${count} (${(shares[t][p] * 100).toFixed(1)}% of the row)`));
    const data = [{
      type: "heatmap",
      x: names,
      y: names,
      z: shares,
      zmin: 0,
      zmax: 1,
      text: counts.map((row) => row.map(String)),
      texttemplate: "%{text}",
      textfont: { size: names.length > 6 ? 10 : 13 },
      customdata: hover,
      hovertemplate: "%{customdata}<extra></extra>",
      colorscale: CONFUSION_SCALE,
      xgap: 1,
      ygap: 1,
      colorbar: { thickness: 8, len: 0.9, tickformat: ".0%", tickfont: { size: 9 }, outlinewidth: 0, title: { text: "of row", side: "top", font: { size: 10 } } },
    }];
    const layout = {
      height: 300,
      margin: { l: 48, r: 8, t: 6, b: 44 },
      font: FONT,
      xaxis: { title: { text: "predicted", standoff: 4 }, type: "category", fixedrange: true, side: "bottom" },
      yaxis: { title: { text: "true", standoff: 4 }, type: "category", autorange: "reversed", fixedrange: true, scaleanchor: "x" },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
    };
    return window.Plotly.react(this.plot, data, layout, PLOT_CONFIG);
  }

  drawGallery(answer, names) {
    const items = answer.misclassified.map((item) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "miss-item";
      button.dataset.index = String(item.index);
      const percent = `${(item.probability * 100).toFixed(0)}%`;
      button.setAttribute("aria-label", `test #${item.index}: a ${item.label}, predicted ${names[item.predicted]} with ${percent}; trace it`);
      button.title = `MNIST test #${item.index}: true ${names[item.true_class]}, predicted ${names[item.predicted]} (output ${item.probability.toFixed(3)}). Click to trace it.`;
      const canvas = document.createElement("canvas");
      canvas.width = 28;
      canvas.height = 28;
      if (this.thumbnails.has(item.index)) paintPixels(canvas, this.thumbnails.get(item.index));
      const caption = document.createElement("span");
      caption.className = "miss-caption";
      caption.innerHTML = `<span class="miss-label">${names[item.true_class]}→${names[item.predicted]}</span><span class="miss-p">${percent}</span>`;
      button.append(canvas, caption);
      button.addEventListener("click", () => {
        for (const other of this.gallery.querySelectorAll(".miss-item")) other.setAttribute("aria-pressed", String(other === button));
        this.onChoose({ kind: "mnist", split: "test", index: item.index, label: item.label, pixels: this.thumbnails.get(item.index) || null });
      });
      return button;
    });
    this.gallery.replaceChildren(...items);
  }

  // The listed digits' pixels, a page of the test split at a time (they come in index order).
  async fetchThumbnails(indices) {
    const missing = indices.filter((index) => !this.thumbnails.has(index));
    while (missing.length > 0) {
      const low = missing[0];
      const page = await api.mnistPage("test", low, Math.min(MNIST_PAGE_MAX, missing[missing.length - 1] - low + 1));
      for (const item of page.items) this.thumbnails.set(item.index, item.pixels);
      if (!this.thumbnails.has(low)) break; // not in the split: leave it blank
      while (missing.length > 0 && this.thumbnails.has(missing[0])) missing.shift();
    }
    for (const button of this.gallery.querySelectorAll(".miss-item")) {
      const pixels = this.thumbnails.get(Number(button.dataset.index));
      if (pixels) paintPixels(button.querySelector("canvas"), pixels);
    }
  }
}
