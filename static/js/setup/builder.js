// The layer builder: the spec as a list of layers to add, remove, reorder and edit through
// menus and fields. Every change is checked by the server (POST /api/specs/check), which
// answers each layer's output shape and parameter count as the engine computes them, or the
// engine's SpecError with the index of the layer it names; the page never works shapes out
// itself. The JSON editor stays the advanced view of the same spec (main.js keeps the two in
// sync through onChange and load).

import { api } from "../server/api.js";

const CHECK_DELAY_MS = 250;
const LAYER_TYPES = ["conv", "maxpool", "avgpool", "flatten", "dense"];
const ACTIVATIONS = ["relu", "leaky_relu", "sigmoid", "tanh", "identity", "softmax"];
const LOSSES = ["cross_entropy", "binary_cross_entropy", "mse"];
const POOL_FIELDS = [
  { key: "size", label: "size", kind: "pair" },
  { key: "stride", label: "stride", kind: "pair" },
];
const FIELDS = {
  conv: [
    { key: "filters", label: "filters", kind: "int" },
    { key: "kernel", label: "kernel", kind: "pair" },
    { key: "stride", label: "stride", kind: "pair" },
    { key: "padding", label: "padding", kind: "pair" },
    { key: "padding_mode", label: "pad with", kind: "choice", choices: ["zeros", "circular"], names: ["zeros", "wrap-around"] },
    { key: "operation", label: "operation", kind: "choice", choices: ["cross_correlation", "convolution"], names: ["correlate", "convolve (W rotated)"] },
    { key: "activation", label: "activation", kind: "choice", choices: ACTIVATIONS },
  ],
  maxpool: POOL_FIELDS,
  avgpool: POOL_FIELDS,
  flatten: [],
  dense: [
    { key: "units", label: "units", kind: "int" },
    { key: "activation", label: "activation", kind: "choice", choices: ACTIVATIONS },
  ],
};
// What a new layer of each type starts as.
const NEW_LAYER = {
  conv: { type: "conv", filters: 4, kernel: 3, stride: 1, padding: 1, padding_mode: "zeros", operation: "cross_correlation", activation: "relu" },
  maxpool: { type: "maxpool", size: 2, stride: 2 },
  avgpool: { type: "avgpool", size: 2, stride: 2 },
  flatten: { type: "flatten" },
  dense: { type: "dense", units: 10, activation: "relu" },
};
// Which field an engine message is about, after its "layer N (type): " prefix: a quoted key
// first ('filters' must be ...), else the word naming one that comes first in the message
// ("stride 2 does not divide ...; change padding, kernel or stride" is about the stride).
const FIELD_WORDS = [
  [/padding_mode|circular padding/, "padding_mode"],
  [/\boperation\b/, "operation"],
  [/\bkernel\b/, "kernel"],
  [/\bpadding\b/, "padding"],
  [/\bwindow\b/, "size"],
  [/\bstride\b/, "stride"],
  [/\bfilters\b/, "filters"],
  [/\bunits\b/, "units"],
  [/activation|softmax|sigmoid/, "activation"],
  [/3-D feature map|flat input|flat output|layer type/, "type"],
];

export function fieldOfMessage(message, type) {
  const text = message.replace(/^invalid spec:\s*/, "").replace(/^layer \d+ \([^)]*\):\s*/, "");
  const keys = new Set([...(FIELDS[type] || []).map((f) => f.key), "type"]);
  for (const quoted of text.matchAll(/'(\w+)'/g)) if (keys.has(quoted[1])) return quoted[1];
  let first = null;
  for (const [pattern, key] of FIELD_WORDS) {
    const match = pattern.exec(text);
    if (match && keys.has(key) && (!first || match.index < first.at)) first = { at: match.index, key };
  }
  return first ? first.key : "type";
}

function showValue(value) {
  if (Array.isArray(value)) return value.length === 2 && value[0] === value[1] ? String(value[0]) : value.join(",");
  return value === undefined || value === null ? "" : String(value);
}

// "5" -> 5, "5,3" or "5x3" -> [5, 3]; anything else is sent as typed, for the engine to name.
function readValue(text, kind) {
  const trimmed = text.trim();
  if (/^-?\d+$/.test(trimmed)) return Number(trimmed);
  if (kind === "pair") {
    const parts = trimmed.split(/\s*[,x×]\s*/);
    if (parts.length === 2 && parts.every((p) => /^-?\d+$/.test(p))) return parts.map(Number);
  }
  return trimmed;
}

function shapeText(shape) {
  return shape.join("×");
}

function countText(count) {
  return `${count.toLocaleString("en")} param${count === 1 ? "" : "s"}`;
}

export class LayerBuilder {
  constructor(container, { onChange, onApply }) {
    this.container = container;
    this.onChange = onChange;
    this.onApply = onApply;
    this.list = container.querySelector('[data-role="builder-layers"]');
    this.status = container.querySelector('[data-role="builder-status"]');
    this.apply = container.querySelector('[data-role="builder-apply"]');
    this.loss = container.querySelector('[data-role="builder-loss"]');
    this.inputFields = [...container.querySelectorAll('[data-role="builder-input"] input')];
    this.spec = null;
    this.checked = null; // the last check's answer, or {error}
    this.checkNumber = 0;
    this.timer = null;
    for (const loss of LOSSES) this.loss.append(new Option(loss, loss));
    this.loss.addEventListener("change", () => this.edit(() => (this.spec.loss = this.loss.value)));
    this.inputFields.forEach((field, axis) => field.addEventListener("input", () => this.edit(() => {
      this.spec.input_shape = [...(this.spec.input_shape || [1, 28, 28])];
      this.spec.input_shape[axis] = readValue(field.value, "int");
    })));
    container.querySelector('[data-role="builder-add"]').addEventListener("click", () => this.insert(this.spec.layers.length, NEW_LAYER.dense));
    this.apply.addEventListener("click", () => this.onApply(this.copy()));
  }

  copy() {
    return JSON.parse(JSON.stringify(this.spec));
  }

  // A spec from a session or the JSON editor; `echo` false keeps the editor's own text.
  load(spec, { echo = false } = {}) {
    if (!spec || typeof spec !== "object" || !Array.isArray(spec.layers)) return;
    this.spec = JSON.parse(JSON.stringify(spec));
    this.spec.layers = this.spec.layers.map((layer) => (layer && typeof layer === "object" ? layer : { type: String(layer) }));
    this.render();
    this.scheduleCheck(echo, 0);
  }

  // --- editing -------------------------------------------------------------------------------

  edit(change, { rerender = false } = {}) {
    change();
    if (rerender) this.render();
    this.scheduleCheck(true);
  }

  insert(at, layer) {
    this.edit(() => this.spec.layers.splice(at, 0, { ...layer }), { rerender: true });
    const row = this.list.children[at];
    if (row) row.querySelector("select").focus();
  }

  remove(at) {
    this.edit(() => this.spec.layers.splice(at, 1), { rerender: true });
    const row = this.list.children[Math.min(at, this.spec.layers.length - 1)];
    if (row) row.querySelector("select").focus();
  }

  move(at, by) {
    const to = at + by;
    if (to < 0 || to >= this.spec.layers.length) return;
    this.edit(() => {
      const [layer] = this.spec.layers.splice(at, 1);
      this.spec.layers.splice(to, 0, layer);
    }, { rerender: true });
    const button = this.list.children[to].querySelector(by < 0 ? '[data-action="up"]' : '[data-action="down"]');
    if (button && !button.disabled) button.focus();
  }

  changeType(at, type) {
    this.edit(() => {
      const old = this.spec.layers[at];
      const fresh = { ...NEW_LAYER[type] };
      if ("activation" in fresh && old.activation) fresh.activation = old.activation;
      this.spec.layers[at] = fresh;
    }, { rerender: true });
    this.list.children[at].querySelector("select").focus();
  }

  // --- drawing -------------------------------------------------------------------------------

  render() {
    const spec = this.spec;
    this.loss.value = spec.loss;
    const shape = Array.isArray(spec.input_shape) ? spec.input_shape : [];
    this.inputFields.forEach((field, axis) => (field.value = showValue(shape[axis])));
    this.list.replaceChildren(...spec.layers.map((layer, index) => this.row(layer, index)));
    this.checked = null; // the rows changed: the next check's answer describes them
    this.showCheck();
  }

  row(layer, index) {
    const count = this.spec.layers.length;
    const item = document.createElement("li");
    item.className = "builder-layer";
    item.dataset.index = String(index);
    item.dataset.type = layer.type;
    const head = document.createElement("div");
    head.className = "builder-head";
    const number = document.createElement("span");
    number.className = "builder-number";
    number.textContent = String(index);
    const type = document.createElement("select");
    type.dataset.field = "type";
    type.setAttribute("aria-label", `layer ${index} type`);
    for (const option of LAYER_TYPES) type.append(new Option(option, option));
    if (!LAYER_TYPES.includes(layer.type)) type.append(new Option(String(layer.type), String(layer.type)));
    type.value = String(layer.type);
    type.addEventListener("change", () => this.changeType(index, type.value));
    const readout = document.createElement("span");
    readout.className = "builder-readout";
    readout.dataset.role = "readout";
    const tools = document.createElement("span");
    tools.className = "builder-tools";
    const tool = (action, text, label, handler, disabled = false) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "ghost builder-tool";
      button.dataset.action = action;
      button.textContent = text;
      button.title = label;
      button.setAttribute("aria-label", `${label} (layer ${index})`);
      button.disabled = disabled;
      button.addEventListener("click", handler);
      return button;
    };
    tools.append(
      tool("up", "↑", "Move up", () => this.move(index, -1), index === 0),
      tool("down", "↓", "Move down", () => this.move(index, 1), index === count - 1),
      tool("insert", "+", "Add a layer below", () => this.insert(index + 1, NEW_LAYER[layer.type] || NEW_LAYER.dense)),
      tool("remove", "✕", "Remove", () => this.remove(index), count === 1),
    );
    head.append(number, type, tools);
    item.append(head, readout);
    const fields = FIELDS[layer.type] || [];
    if (fields.length) {
      const grid = document.createElement("div");
      grid.className = "builder-fields";
      for (const field of fields) grid.append(this.field(layer, index, field));
      item.append(grid);
    }
    const error = document.createElement("p");
    error.className = "builder-error";
    error.dataset.role = "error";
    error.hidden = true;
    item.append(error);
    return item;
  }

  field(layer, index, field) {
    const label = document.createElement("label");
    label.className = "builder-field";
    const caption = document.createElement("span");
    caption.textContent = field.label;
    let control;
    if (field.kind === "choice") {
      control = document.createElement("select");
      field.choices.forEach((choice, k) => control.append(new Option(field.names ? field.names[k] : choice.replace("_", " "), choice)));
      control.value = layer[field.key] ?? field.choices[0];
      control.addEventListener("change", () => this.edit(() => (this.spec.layers[index][field.key] = control.value)));
    } else {
      control = document.createElement("input");
      control.type = "text";
      control.inputMode = "numeric";
      control.autocomplete = "off";
      control.spellcheck = false;
      control.value = showValue(layer[field.key]);
      if (field.kind === "pair") control.title = "a number, or height,width";
      control.addEventListener("input", () => this.edit(() => {
        if (control.value.trim() === "") delete this.spec.layers[index][field.key];
        else this.spec.layers[index][field.key] = readValue(control.value, field.kind);
      }));
    }
    control.dataset.field = field.key;
    control.setAttribute("aria-label", `layer ${index} ${field.label}`);
    label.append(caption, control);
    return label;
  }

  // --- the server's check --------------------------------------------------------------------

  scheduleCheck(echo, delay = CHECK_DELAY_MS) {
    clearTimeout(this.timer);
    this.apply.disabled = true;
    this.container.dataset.checking = "true";
    if (echo) this.onChange(this.copy());
    this.timer = setTimeout(() => this.check(), delay);
  }

  async check() {
    const number = ++this.checkNumber;
    let result;
    try {
      result = await api.checkSpec(this.copy());
    } catch (error) {
      if (error.status !== 422) {
        result = { error: error.message, layer: null, unreachable: true };
      } else {
        result = { error: error.message, layer: error.body && Number.isInteger(error.body.layer) ? error.body.layer : null };
      }
    }
    if (number !== this.checkNumber) return; // a newer edit was checked meanwhile
    this.checked = result;
    this.showCheck();
    delete this.container.dataset.checking;
  }

  showCheck() {
    const result = this.checked;
    for (const marked of this.container.querySelectorAll('[aria-invalid="true"]')) marked.removeAttribute("aria-invalid");
    for (const row of this.list.children) {
      row.classList.remove("has-error");
      const error = row.querySelector('[data-role="error"]');
      error.hidden = true;
      error.textContent = "";
      row.querySelector('[data-role="readout"]').textContent = "";
    }
    this.loss.removeAttribute("aria-invalid");
    if (!result) return;
    if (result.error) {
      this.apply.disabled = true;
      const row = result.layer !== null ? this.list.children[result.layer] : null;
      if (row) {
        row.classList.add("has-error");
        const error = row.querySelector('[data-role="error"]');
        error.textContent = result.error.replace(/^invalid spec:\s*layer \d+ \([^)]*\):\s*/, "");
        error.hidden = false;
        const key = fieldOfMessage(result.error, this.spec.layers[result.layer].type);
        const control = row.querySelector(`[data-field="${key}"]`) || row.querySelector('[data-field="type"]');
        control.setAttribute("aria-invalid", "true");
        this.status.textContent = `Layer ${result.layer} cannot be built: see below.`;
      } else {
        if (/\bloss\b/.test(result.error)) this.loss.setAttribute("aria-invalid", "true");
        if (/input_shape/.test(result.error)) for (const field of this.inputFields) field.setAttribute("aria-invalid", "true");
        this.status.textContent = result.unreachable ? `Cannot check the network: ${result.error}` : result.error.replace(/^invalid spec:\s*/, "");
      }
      this.status.dataset.state = "error";
      return;
    }
    result.layers.forEach((layer, index) => {
      const row = this.list.children[index];
      if (row) row.querySelector('[data-role="readout"]').textContent = `→ ${shapeText(layer.output_shape)} · ${countText(layer.parameters)}`;
    });
    this.status.textContent = `${result.layers.length} layers, ${countText(result.parameters)}; input ${shapeText(result.spec.input_shape)} → ${result.output_size} output${result.output_size === 1 ? "" : "s"}.`;
    this.status.dataset.state = "ok";
    this.apply.disabled = false;
  }
}
