// Arrays of the API's answers as flat typed tensors {shape, data}, whichever format the server
// answered in: a safetensors file (an 8-byte little-endian header length N, N bytes of JSON
// header, then raw little-endian data) read with typed-array views, or nested JSON lists
// flattened once when first asked for. The drawing code reads tensors; the inspector reads
// nested arrays, made from a tensor only when it first touches one (a click, not a frame).

const TYPED = {
  F32: Float32Array,
  F64: Float64Array,
  I32: Int32Array,
  I16: Int16Array,
  I8: Int8Array,
  U8: Uint8Array,
  BOOL: Uint8Array,
};

export class TensorFileError extends Error {}

// The tensors of a safetensors file (an ArrayBuffer) and its __metadata__. Each tensor's data
// is a view on `buffer` (no copy) unless its offset is not a multiple of its item size, which
// typed arrays refuse: then, and only then, its bytes are copied.
export function decodeSafetensors(buffer) {
  if (buffer.byteLength < 8) throw new TensorFileError("the binary answer is shorter than its header length");
  const view = new DataView(buffer);
  const headerLength = Number(view.getBigUint64(0, true));
  if (8 + headerLength > buffer.byteLength) throw new TensorFileError("the binary answer's header runs past its end");
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, headerLength)));
  const start = 8 + headerLength;
  const tensors = new Map();
  let metadata = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") {
      metadata = entry || {};
      continue;
    }
    const Typed = TYPED[entry.dtype];
    if (!Typed) throw new TensorFileError(`tensor ${name} has dtype ${entry.dtype}, which the page cannot read`);
    const [begin, end] = entry.data_offsets;
    const length = (end - begin) / Typed.BYTES_PER_ELEMENT;
    const offset = start + begin;
    if (end > buffer.byteLength - start || !Number.isInteger(length)) throw new TensorFileError(`tensor ${name} does not fit the answer`);
    const data = offset % Typed.BYTES_PER_ELEMENT === 0 ? new Typed(buffer, offset, length) : new Typed(buffer.slice(offset, offset + (end - begin)));
    tensors.set(name, { shape: entry.shape, data });
  }
  return { tensors, metadata };
}

export function shapeOfNested(array) {
  const shape = [];
  let node = array;
  while (Array.isArray(node)) {
    shape.push(node.length);
    node = node[0];
  }
  return shape;
}

export function fromNested(nested, Typed = Float64Array) {
  const shape = shapeOfNested(nested);
  const size = shape.reduce((a, b) => a * b, 1);
  const data = new Typed(size);
  let k = 0;
  const walk = (node) => {
    if (Array.isArray(node)) for (const item of node) walk(item);
    else data[k++] = node === null ? NaN : node;
  };
  walk(nested);
  return { shape, data };
}

export function toNested({ shape, data }) {
  if (shape.length === 0) return data[0];
  const build = (axis, offset) => {
    const length = shape[axis];
    if (axis === shape.length - 1) return Array.from(data.subarray(offset, offset + length));
    const stride = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const out = new Array(length);
    for (let k = 0; k < length; k++) out[k] = build(axis + 1, offset + k * stride);
    return out;
  };
  return build(0, 0);
}

// Makes `holder[key]` a nested array built from `tensor` the first time it is read.
function defineLazy(holder, key, tensor) {
  let nested;
  Object.defineProperty(holder, key, {
    configurable: true,
    enumerable: true,
    get() {
      if (nested === undefined) nested = toNested(tensor);
      return nested;
    },
    set(value) {
      nested = value;
    },
  });
}

function childOf(node, part) {
  const key = /^\d+$/.test(part) ? Number(part) : part;
  if (node[key] == null || typeof node[key] !== "object") node[key] = {};
  return node[key];
}

// Gives `answer` (the JSON part of a safetensors answer) its arrays back as lazy nested
// arrays at the places their names say ("layers.3.grads.W" -> answer.layers[3].grads.W).
function attachNested(answer, tensors, prefix) {
  for (const [name, tensor] of tensors) {
    if (!name.startsWith(prefix)) continue;
    const parts = name.slice(prefix.length).split(".");
    let node = answer;
    for (const part of parts.slice(0, -1)) node = childOf(node, part);
    defineLazy(node, parts[parts.length - 1], tensor);
  }
}

function nestedAt(root, name) {
  let node = root;
  for (const part of name.split(".")) {
    if (node == null) return undefined;
    node = node[/^\d+$/.test(part) ? Number(part) : part];
  }
  return node;
}

// A trace or step answer with `tensor(name)`: {shape, data} or null when the answer does not
// carry that array (a field not asked for, a layer without weights). Names as in the binary
// format, without the step's "trace." prefix for the trace's own arrays.
export class Answer {
  constructor(json, tensors, isStep) {
    this.json = json;
    this.tensors = tensors || new Map();
    this.isStep = isStep;
    this.flattened = new Map();
    if (tensors) {
      if (isStep) {
        attachNested(json.trace || (json.trace = {}), tensors, "trace.");
        const layers = (json.trace.layers || []).length;
        for (const key of ["params_after", "batch_grads"]) {
          const byLayer = {};
          attachNested(byLayer, tensors, `${key}.`);
          json[key] = Array.from({ length: layers }, (_, i) => byLayer[i] || {});
        }
      } else {
        attachNested(json, tensors, "");
      }
    }
    if (isStep && json.params_before === undefined && json.trace && json.trace.layers) {
      // The binary step answer does not repeat the weights before the update: they are the trace's.
      Object.defineProperty(json, "params_before", { enumerable: true, configurable: true, get: () => json.trace.layers.map((layer) => layer.params || {}) });
    }
  }

  get trace() {
    return this.isStep ? this.json.trace : this.json;
  }

  // Adds the arrays of `other`, the same answer fetched again with other fields (a step's
  // weights and gradients after its maps), to this one: tensors, per-layer keys, the step's
  // lists. Arrays this answer already holds are kept.
  merge(other) {
    for (const [name, tensor] of other.tensors) if (!this.tensors.has(name)) this.tensors.set(name, tensor);
    const mine = this.trace.layers || [];
    (other.trace.layers || []).forEach((layer, i) => {
      for (const key of Object.keys(layer)) {
        if (mine[i] && !(key in mine[i])) Object.defineProperty(mine[i], key, Object.getOwnPropertyDescriptor(layer, key));
      }
    });
    if (this.isStep) {
      for (const key of ["params_after", "batch_grads"]) {
        const theirs = other.json[key];
        if (Array.isArray(theirs) && theirs.some((entry) => Object.keys(entry).length > 0)) this.json[key] = theirs;
      }
    }
    this.flattened.clear(); // it remembers the arrays this answer did not have
  }

  tensor(name) {
    const fileName = this.isStep && !name.startsWith("params_after.") && !name.startsWith("batch_grads.") ? `trace.${name}` : name;
    if (this.tensors.has(fileName)) return this.tensors.get(fileName);
    if (this.flattened.has(name)) return this.flattened.get(name);
    const root = this.isStep && fileName.startsWith("trace.") ? this.json.trace : this.json;
    const path = fileName.startsWith("trace.") ? fileName.slice(6) : fileName;
    const nested = nestedAt(root, path);
    const tensor = Array.isArray(nested) ? fromNested(nested) : null;
    this.flattened.set(name, tensor);
    return tensor;
  }
}

// The answer of a fetch, in whichever format the server chose.
export async function readAnswer(response, isStep) {
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("application/octet-stream")) {
    const { tensors, metadata } = decodeSafetensors(await response.arrayBuffer());
    const json = metadata.json ? JSON.parse(metadata.json) : {};
    return new Answer(json, tensors, isStep);
  }
  return new Answer(await response.json(), null, isStep);
}
