// Shareable links: what the page shows lives in the URL's hash, as TensorFlow Playground
// keeps its state there. `s` the session id (reused when the server still has it), `preset`
// or `spec` (the architecture, base64url JSON), `seed`, `pos` (the positive digit of a one-
// output network), `input` (`test:7`, `train:12`, `example:worked`, or `px:` and 784 grey
// bytes in base64url with `label`), `phase` (the timeline position), `view`, `cell` (the
// inspected number: layer, view and cell as JSON). Opening such a link rebuilds that view.

import { api } from "../server/api.js";

const MNIST_SIDE = 28;

function toBase64Url(bytes) {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64Url(text) {
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
}

function encodeJson(value) {
  return toBase64Url(new TextEncoder().encode(JSON.stringify(value)));
}

function decodeJson(text) {
  return JSON.parse(new TextDecoder().decode(fromBase64Url(text)));
}

// A drawing or upload as 28x28 grey levels rounded to 1/255 (what a screen shows of it).
function encodePixels(pixels) {
  return toBase64Url(pixels.flat().map((v) => Math.round(Math.max(0, Math.min(1, v)) * 255)));
}

function decodePixels(text) {
  const bytes = fromBase64Url(text);
  if (bytes.length !== MNIST_SIDE * MNIST_SIDE) throw new Error("not 28×28 pixels");
  return Array.from({ length: MNIST_SIDE }, (_, i) => Array.from(bytes.subarray(i * MNIST_SIDE, (i + 1) * MNIST_SIDE), (b) => b / 255));
}

function wholeNumber(text) {
  return /^\d{1,9}$/.test(text || "") ? Number(text) : null;
}

// state: {sessionId, preset, spec, seed, positiveClass, input, phase, view, inspected}
export function encodeLink(state) {
  const params = new URLSearchParams();
  if (state.sessionId) params.set("s", state.sessionId);
  if (state.preset) params.set("preset", state.preset);
  else if (state.spec) params.set("spec", encodeJson(state.spec));
  if (state.seed !== null && state.seed !== undefined) params.set("seed", String(state.seed));
  if (state.positiveClass !== null && state.positiveClass !== undefined) params.set("pos", String(state.positiveClass));
  const input = state.input;
  if (input && input.kind === "mnist") params.set("input", `${input.split}:${input.index}`);
  else if (input && input.kind === "example") params.set("input", `example:${input.name}`);
  else if (input && input.kind === "pixels" && input.pixels) {
    params.set("input", `px:${encodePixels(input.pixels)}`);
    params.set("label", String(input.label));
  }
  if (state.phase !== null && state.phase !== undefined) params.set("phase", String(state.phase));
  if (state.view && state.view !== "auto") params.set("view", state.view);
  if (state.inspected) params.set("cell", JSON.stringify(state.inspected));
  return `#${params.toString()}`;
}

// The state a hash describes, or null when it describes none (an empty hash, an anchor).
// Parts that cannot be read are left out and named in `problems`.
export function decodeLink(hash) {
  const params = new URLSearchParams((hash || "").replace(/^#/, ""));
  if (!params.has("preset") && !params.has("spec") && !params.has("s")) return null;
  const state = { problems: [] };
  const sessionId = params.get("s");
  if (sessionId && /^[A-Za-z0-9_-]{22}$/.test(sessionId)) state.sessionId = sessionId;
  if (params.has("preset")) state.preset = params.get("preset");
  else if (params.has("spec")) {
    try {
      state.spec = decodeJson(params.get("spec"));
    } catch {
      state.problems.push("its architecture could not be read");
    }
  }
  state.seed = wholeNumber(params.get("seed"));
  state.positiveClass = wholeNumber(params.get("pos"));
  const input = params.get("input") || "";
  const dataset = /^(test|train):(\d{1,9})$/.exec(input);
  if (dataset) state.input = { kind: "mnist", split: dataset[1], index: Number(dataset[2]) };
  else if (input.startsWith("example:")) state.input = { kind: "example", name: input.slice(8) };
  else if (input.startsWith("px:")) {
    try {
      state.input = { kind: "pixels", pixels: decodePixels(input.slice(3)), label: wholeNumber(params.get("label")) ?? 0, description: "the linked drawing" };
    } catch {
      state.problems.push("its drawn input could not be read");
    }
  } else if (input) state.problems.push("its input could not be read");
  state.phase = wholeNumber(params.get("phase"));
  state.view = params.get("view") || "auto";
  if (params.has("cell")) {
    try {
      const inspected = JSON.parse(params.get("cell"));
      if (Number.isInteger(inspected.index) && typeof inspected.view === "string" && inspected.cell && typeof inspected.cell === "object") state.inspected = inspected;
      else throw new Error("not a cell");
    } catch {
      state.problems.push("its selected cell could not be read");
    }
  }
  return state;
}

// Sessions this browser built, imported or copied, newest last (localStorage, at most
// OWN_SESSIONS_KEPT): a link naming one of them reopens that session; a link naming anyone
// else's opens a copy of it, so that whoever opens a shared link trains -- and later replaces,
// which deletes -- their own copy, never the session of the person who shared it.
const OWN_SESSIONS_KEY = "cnnviz.ownSessions";
const OWN_SESSIONS_KEPT = 50;

function ownSessions() {
  try {
    const ids = JSON.parse(window.localStorage.getItem(OWN_SESSIONS_KEY) || "[]");
    return Array.isArray(ids) ? ids.filter((id) => typeof id === "string") : [];
  } catch {
    return []; // storage unavailable or unreadable: every linked session is someone else's
  }
}

export function rememberOwnSession(id) {
  const ids = ownSessions().filter((known) => known !== id);
  ids.push(id);
  try {
    window.localStorage.setItem(OWN_SESSIONS_KEY, JSON.stringify(ids.slice(-OWN_SESSIONS_KEPT)));
  } catch {
    // storage unavailable: this page's own link opens a copy next time, never a shared session
  }
}

export function isOwnSession(id) {
  return ownSessions().includes(id);
}

// The session a link names when the server still has it, else null (it expired, the server
// restarted without its store, or someone built another network in that tab meanwhile).
export async function linkedSession(state) {
  if (!state.sessionId) return null;
  try {
    return await api.getSession(state.sessionId);
  } catch (error) {
    if (error.status === 404) return null;
    throw error;
  }
}

// The page input a link's input stands for, with the pixels the input panel shows.
export async function linkedInput(state, examples) {
  const input = state.input;
  if (!input) return null;
  if (input.kind === "mnist") {
    const sample = await api.mnistSample(input.split, input.index);
    return { ...input, label: sample.label, pixels: sample.pixels };
  }
  if (input.kind === "example") return examples(input.name);
  return input;
}
