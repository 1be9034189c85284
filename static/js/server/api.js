// Talks to the FastAPI service: every request goes through `request`, which turns
// error answers into ApiError (with the server's "detail" made readable) and reports
// slow requests to the busy indicator.

import { API_BASE, BUSY_DELAY_MS } from "../config.js";
import { readAnswer } from "./tensors.js";

export class ApiError extends Error {
  constructor(status, detail, path, body = null) {
    super(formatDetail(detail));
    this.status = status;
    this.detail = detail;
    this.path = path;
    this.body = body; // the whole error answer: a cap refusal's `cap` and `limit`, the spec check's `layer`
  }
}

// FastAPI answers 422 either with a string or with pydantic's list of {loc, msg}.
export function formatDetail(detail) {
  if (detail == null) return "unknown error";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((item) => {
        if (typeof item === "string") return item;
        const where = Array.isArray(item.loc) ? item.loc.filter((p) => p !== "body").join(".") : "";
        return where ? `${where}: ${item.msg}` : item.msg || JSON.stringify(item);
      })
      .join("; ");
  }
  if (typeof detail === "object" && detail.msg) return detail.msg;
  return JSON.stringify(detail);
}

const busyListeners = new Set();
let pendingSlow = 0;

// listener(isBusy, label) is called when a request has been running for BUSY_DELAY_MS
// and again when no slow request is left.
export function onBusyChange(listener) {
  busyListeners.add(listener);
}

function notifyBusy(label) {
  for (const listener of busyListeners) listener(pendingSlow > 0, label);
}

// `tensors`: "trace" or "step" to read a trace or step answer (binary or JSON) as an Answer;
// `blob`: the answer's bytes as a Blob.
async function request(method, path, { json, form, label, tensors, blob } = {}) {
  const options = { method, headers: {} };
  if (json !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(json);
  } else if (form !== undefined) {
    options.body = form;
  }
  let wasSlow = false;
  const timer = setTimeout(() => {
    wasSlow = true;
    pendingSlow += 1;
    notifyBusy(label || `${method} ${path}`);
  }, BUSY_DELAY_MS);
  try {
    let response;
    try {
      response = await fetch(API_BASE + path, options);
    } catch (err) {
      throw new ApiError(0, `the server did not answer (${err.message})`, path);
    }
    if (response.status === 204) return null;
    if (tensors && response.ok) return await readAnswer(response, tensors === "step");
    if (blob && response.ok) return await response.blob();
    const text = await response.text();
    let body = null;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        body = { detail: text };
      }
    }
    if (!response.ok) {
      throw new ApiError(response.status, body && body.detail !== undefined ? body.detail : response.statusText, path, body);
    }
    return body;
  } finally {
    clearTimeout(timer);
    if (wasSlow) {
      pendingSlow -= 1;
      notifyBusy(label);
    }
  }
}

export const api = {
  presets: () => request("GET", "/presets", { label: "Loading presets" }),

  createSession: ({ preset, spec, seed, positive_class: positiveClass }) => {
    const body = spec ? { spec } : { preset };
    if (seed !== undefined && seed !== null) body.seed = seed;
    if (positiveClass !== undefined && positiveClass !== null) body.positive_class = positiveClass;
    return request("POST", "/sessions", { json: body, label: "Building the network" });
  },

  // The engine's shapes and parameter counts of a spec, or a 422 naming the layer (body.layer).
  checkSpec: (spec) => request("POST", "/specs/check", { json: { spec }, label: "Checking the architecture" }),

  getSession: (id) => request("GET", `/sessions/${encodeURIComponent(id)}`, { label: "Opening the linked session" }),

  deleteSession: (id) => request("DELETE", `/sessions/${encodeURIComponent(id)}`),

  // Trace and step answers come as safetensors files holding only `fields` (every field when
  // it is absent), read into an Answer; a server that answers JSON is read the same way.
  trace: (id, input, fields) =>
    request("POST", `/sessions/${encodeURIComponent(id)}/trace${binaryQuery(fields)}`, {
      json: inputBody(input),
      label: "Running forward and backward",
      tensors: "trace",
    }),

  step: (id, input, training, fields) =>
    request("POST", `/sessions/${encodeURIComponent(id)}/step${binaryQuery(fields)}`, {
      json: { ...trainingBody(training), ...(input ? inputBody(input) : {}) },
      label: "Training one step",
      tensors: "step",
    }),

  // The same step's answer again with other fields: the server keeps the latest step's arrays
  // (GET /api/sessions/{id}/steps/{step}); a 409 says they are gone (a newer step, a restart).
  keptStep: (id, step, fields) =>
    request("GET", `/sessions/${encodeURIComponent(id)}/steps/${step}${binaryQuery(fields)}`, {
      label: "Fetching the step's weights and gradients",
      tensors: "step",
    }),

  train: (id, steps, training) =>
    request("POST", `/sessions/${encodeURIComponent(id)}/train`, {
      json: { steps, ...trainingBody(training) },
      label: `Training ${steps} steps`,
    }),

  // exclude: test-split indices left out of the score (digits the user trained on).
  evaluate: (id, limit, exclude) =>
    request("POST", `/sessions/${encodeURIComponent(id)}/evaluate`, {
      json: { ...(limit ? { limit } : {}), ...(exclude && exclude.length ? { exclude } : {}) },
      label: "Evaluating on the test split",
    }),

  history: (id) => request("GET", `/sessions/${encodeURIComponent(id)}/history`),

  exportUrl: (id, format = "session") =>
    `${API_BASE}/sessions/${encodeURIComponent(id)}/export?format=${encodeURIComponent(format)}`,

  importSession: (file) => {
    const form = new FormData();
    form.append("file", file, file.name);
    return request("POST", "/sessions/import", { form, label: "Importing the session" });
  },

  // A new session holding what session `id` holds (weights, optimizer state, step, history):
  // its exported file imported again, under a new id.
  copySession: async (id) => {
    const file = await request("GET", `/sessions/${encodeURIComponent(id)}/export?format=session`, { label: "Copying the linked session", blob: true });
    return api.importSession(new File([file], "linked-session.npz"));
  },

  mnistPage: (split, offset, limit) =>
    request("GET", `/mnist?split=${encodeURIComponent(split)}&offset=${offset}&limit=${limit}&pixels=true`, {
      label: "Loading MNIST digits",
    }),

  mnistSample: (split, index) =>
    request("GET", `/mnist/${index}?split=${encodeURIComponent(split)}`, { label: "Loading MNIST digits" }),

  preprocessImage: (blob, filename) => {
    const form = new FormData();
    form.append("file", blob, filename || "image.png");
    return request("POST", "/images", { form, label: "Preprocessing the image" });
  },
};

// Every per-layer array a trace or step answer can carry (DESIGN.md, "Second round").
export const ALL_FIELDS = ["z", "a", "delta", "grad_a", "grads", "params", "argmax"];

function binaryQuery(fields) {
  const query = "?format=safetensors";
  return fields && fields.length < ALL_FIELDS.length ? `${query}&fields=${fields.join(",")}` : query;
}

function trainingBody(training) {
  return {
    batch_size: training.batch_size,
    learning_rate: training.learning_rate,
    optimizer: training.optimizer,
  };
}

// The page keeps its input as {kind: "mnist", split, index, label} or {kind: "pixels", pixels, label}.
function inputBody(input) {
  if (input.kind === "example") return { input: { example: input.name } };
  if (input.kind === "mnist") return { input: { dataset: "mnist", split: input.split, index: input.index } };
  return { input: { pixels: input.pixels }, label: input.label };
}

// --- the inspector's gradient check and what-if traces (issue 9) ---

// A trace request changed in one respect: another label for the same input, weights that
// differ (`edits`, the session keeps its own), or other pixels. The session is never changed.
export function whatIfBody(input, { label, edits, pixels } = {}) {
  const body = pixels ? { input: { pixels }, label: label ?? input.label } : inputBody(input);
  if (label !== undefined && label !== null) body.label = label;
  if (edits && edits.length) body.edits = edits;
  return body;
}

// An Answer, like api.trace: the what-if can be shown in the strip as any other trace.
api.traceWhatIf = (id, input, change) =>
  request("POST", `/sessions/${encodeURIComponent(id)}/trace${binaryQuery()}`, { json: whatIfBody(input, change), label: "Tracing the what-if", tensors: "trace" });

api.gradcheck = (id, input, change, of, epsilon) =>
  request("POST", `/sessions/${encodeURIComponent(id)}/gradcheck`, {
    json: { ...whatIfBody(input, change), of, epsilon },
    label: "Checking the gradient numerically",
  });
