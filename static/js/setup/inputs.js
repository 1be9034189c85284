// The input panel: MNIST thumbnails, a drawing canvas (pointer events: mouse, pen and
// touch) and an image upload, each ending in one input {kind, ..., label} for the page.

import { api } from "../server/api.js";
import { MNIST_PAGE_SIZE, DRAW_BRUSH_PX, DIGIT_INK_LEVEL, DIGIT_MAX_INKED_SHARE, DIGIT_MAX_BOX_FILL } from "../config.js";

export function paintPixels(canvas, pixels) {
  const height = pixels.length;
  const width = pixels[0].length;
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let i = 0; i < height; i++) {
    for (let j = 0; j < width; j++) {
      const grey = Math.round(Math.max(0, Math.min(1, pixels[i][j])) * 255);
      const at = (i * width + j) * 4;
      image.data[at] = grey;
      image.data[at + 1] = grey;
      image.data[at + 2] = grey;
      image.data[at + 3] = 255;
    }
  }
  context.putImageData(image, 0, 0);
}

export class InputPanel {
  constructor({ onInput, onError }) {
    this.onInput = onInput;
    this.onError = onError;
    this.split = "train"; // the default input is a training digit: Step puts it in every batch
    this.offset = 0;
    this.total = null;
    this.current = null;
    this.grid = document.getElementById("mnist-grid");
    this.labelSelect = document.getElementById("label-select");
    this.caption = document.getElementById("input-caption");
    this.preview = document.getElementById("input-preview");
    // A drawing or an upload has no label until the user says which digit it is (never a silent 0).
    this.labelSelect.append(new Option("choose…", ""));
    for (let digit = 0; digit <= 9; digit++) this.labelSelect.append(new Option(String(digit), String(digit)));
    this.pending = null; // a preprocessed drawing or upload waiting for its label
    this.setupTabs();
    this.setupMnist();
    this.setupDrawing();
    this.setupUpload();
    this.labelSelect.addEventListener("change", () => {
      if (this.labelSelect.value === "") return;
      const label = Number(this.labelSelect.value);
      if (this.pending) this.use({ ...this.pending, label });
      else if (this.current && this.current.kind === "pixels") this.use({ ...this.current, label });
    });
  }

  setupTabs() {
    const tabs = [...document.querySelectorAll('.tabs [role="tab"]')];
    const select = (tab) => {
      for (const other of tabs) {
        const selected = other === tab;
        other.setAttribute("aria-selected", String(selected));
        other.tabIndex = selected ? 0 : -1;
        document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
      }
      document.getElementById("own-label").hidden = tab.id === "tab-mnist";
    };
    tabs.forEach((tab, k) => {
      tab.addEventListener("click", () => select(tab));
      tab.addEventListener("keydown", (event) => {
        if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
        const next = tabs[(k + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
        select(next);
        next.focus();
        event.preventDefault();
      });
    });
  }

  setupMnist() {
    document.getElementById("mnist-split").addEventListener("change", (event) => {
      this.split = event.target.value;
      this.offset = 0;
      this.loadPage();
    });
    document.getElementById("mnist-prev").addEventListener("click", () => {
      this.offset = Math.max(0, this.offset - MNIST_PAGE_SIZE);
      this.loadPage();
    });
    document.getElementById("mnist-next").addEventListener("click", () => {
      if (this.total === null || this.offset + MNIST_PAGE_SIZE < this.total) {
        this.offset += MNIST_PAGE_SIZE;
        this.loadPage();
      }
    });
  }

  async loadPage() {
    this.grid.setAttribute("aria-busy", "true");
    try {
      const page = await api.mnistPage(this.split, this.offset, MNIST_PAGE_SIZE);
      this.total = page.total;
      const buttons = page.items.map((item) => this.thumbnail(item));
      this.grid.replaceChildren(...buttons);
      const last = Math.min(this.offset + MNIST_PAGE_SIZE, page.total);
      document.getElementById("mnist-page").textContent = `${this.offset}–${last - 1} of ${page.total}`;
      document.getElementById("mnist-prev").disabled = this.offset === 0;
      document.getElementById("mnist-next").disabled = last >= page.total;
      return page.items;
    } catch (error) {
      this.onError(error);
      return [];
    } finally {
      this.grid.removeAttribute("aria-busy");
    }
  }

  thumbnail(item) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb";
    button.dataset.index = String(item.index);
    button.setAttribute("aria-label", `MNIST ${this.split} #${item.index}, label ${item.label}`);
    button.setAttribute("aria-pressed", String(this.isCurrent(item.index)));
    const canvas = document.createElement("canvas");
    paintPixels(canvas, item.pixels);
    const tag = document.createElement("span");
    tag.textContent = String(item.label);
    button.append(canvas, tag);
    button.addEventListener("click", () => this.chooseMnist(item));
    return button;
  }

  isCurrent(index) {
    return Boolean(this.current && this.current.kind === "mnist" && this.current.split === this.split && this.current.index === index);
  }

  chooseMnist(item) {
    document.getElementById("input-warning").hidden = true;
    return this.use({ kind: "mnist", split: this.split, index: item.index, label: item.label, pixels: item.pixels });
  }

  // Shows `input` as the current one and hands it to the page; when the page refuses it (a
  // label the network cannot use, a lost server), the panel goes back to the input in use.
  async use(input) {
    const previous = this.current;
    this.setPending(null);
    this.current = input;
    this.markPressed();
    this.describe();
    const accepted = await this.onInput(input);
    if (accepted === false && this.current === input) {
      this.current = previous;
      this.markPressed();
      this.describe();
    }
    return accepted !== false;
  }

  markPressed() {
    for (const button of this.grid.querySelectorAll(".thumb")) {
      button.setAttribute("aria-pressed", String(this.isCurrent(Number(button.dataset.index))));
    }
  }

  setupDrawing() {
    const canvas = document.getElementById("draw-canvas");
    const context = canvas.getContext("2d");
    const clear = () => {
      context.fillStyle = "#000";
      context.fillRect(0, 0, canvas.width, canvas.height);
    };
    clear();
    let last = null;
    const point = (event) => {
      const box = canvas.getBoundingClientRect();
      return { x: ((event.clientX - box.left) / box.width) * canvas.width, y: ((event.clientY - box.top) / box.height) * canvas.height };
    };
    const stroke = (from, to) => {
      context.strokeStyle = "#fff";
      context.fillStyle = "#fff";
      context.lineWidth = DRAW_BRUSH_PX;
      context.lineCap = "round";
      context.lineJoin = "round";
      context.beginPath();
      context.moveTo(from.x, from.y);
      context.lineTo(to.x, to.y);
      context.stroke();
    };
    canvas.addEventListener("pointerdown", (event) => {
      canvas.setPointerCapture(event.pointerId);
      last = point(event);
      stroke(last, { x: last.x + 0.01, y: last.y });
      this.drawn = true;
      event.preventDefault();
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!last) return;
      const next = point(event);
      stroke(last, next);
      last = next;
      event.preventDefault();
    });
    // The drawing is used as soon as the pen lifts (no separate "use" step).
    const end = async () => {
      if (!last) return;
      last = null;
      if (!this.drawn) return;
      const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
      await this.preprocess(blob, "drawing.png", "your drawing");
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    document.getElementById("draw-clear").addEventListener("click", () => {
      clear();
      this.drawn = false;
      this.labelSelect.value = ""; // the next drawing is a new digit: its label is asked again
      this.setPending(null);
    });
  }

  setupUpload() {
    const file = document.getElementById("upload-file");
    file.addEventListener("change", async () => {
      const chosen = file.files && file.files[0];
      if (!chosen) return;
      this.labelSelect.value = ""; // a new picture: its label is asked again
      // A refused file is not left named in the picker as if it were the input in use.
      if (!(await this.preprocess(chosen, chosen.name, `upload “${chosen.name}”`))) file.value = "";
    });
  }

  async preprocess(blob, filename, description) {
    let answer;
    try {
      answer = await api.preprocessImage(blob, filename);
    } catch (error) {
      this.onError(error);
      return false;
    }
    const input = { kind: "pixels", pixels: answer.pixels, description };
    this.warnIfNotADigit(answer.pixels);
    if (this.labelSelect.value === "") {
      this.setPending(input);
      return true;
    }
    return this.use({ ...input, label: Number(this.labelSelect.value) });
  }

  // The network knows MNIST: one light stroke digit on a dark ground, about a fifth of the
  // 28×28 inked, strokes leaving most of their bounding box dark. A picture inked far more, or
  // a solid block (a photo, a filled shape, noise), is probably no digit.
  warnIfNotADigit(pixels) {
    let inked = 0;
    let top = Infinity, bottom = -1, left = Infinity, right = -1;
    pixels.forEach((row, i) =>
      row.forEach((value, j) => {
        if (value <= DIGIT_INK_LEVEL) return;
        inked += 1;
        top = Math.min(top, i);
        bottom = Math.max(bottom, i);
        left = Math.min(left, j);
        right = Math.max(right, j);
      }),
    );
    const share = inked / (pixels.length * pixels[0].length);
    const boxHeight = bottom - top + 1;
    const boxWidth = right - left + 1;
    const solid = boxHeight >= 8 && boxWidth >= 8 && inked / (boxHeight * boxWidth) > DIGIT_MAX_BOX_FILL;
    const warning = document.getElementById("input-warning");
    const reason = share > DIGIT_MAX_INKED_SHARE ? `${Math.round(share * 100)}% of it is ink after preprocessing (an MNIST digit inks about 17%)` : solid ? "it is a solid block of ink rather than strokes" : null;
    warning.hidden = !reason;
    warning.textContent = reason ? `This picture does not look like a digit: ${reason}. The network was trained on MNIST digits, one light stroke on a dark ground, so expect odd predictions; a photo cropped to one digit works better.` : "";
  }

  // Shows a drawing or upload that waits for its label (the network keeps the input in use).
  setPending(input) {
    this.pending = input;
    const asking = Boolean(input);
    this.labelSelect.toggleAttribute("aria-invalid", asking);
    document.getElementById("own-label").classList.toggle("asking", asking);
    if (asking) {
      paintPixels(this.preview, input.pixels);
      this.caption.textContent = `${input.description} (28×28, preprocessed): which digit is it? Choose its label above to use it.`;
    } else {
      this.describe();
    }
  }

  describe() {
    const input = this.current;
    if (!input) return;
    paintPixels(this.preview, input.pixels);
    if (input.kind === "pixels" && !this.pending) this.labelSelect.value = String(input.label);
    this.caption.textContent =
      input.kind === "mnist"
        ? `MNIST ${input.split} #${input.index}, label ${input.label}`
        : `${input.description} (28×28, preprocessed), label ${input.label}`;
  }
}
