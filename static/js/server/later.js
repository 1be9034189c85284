// A Step asks the server only for the arrays its first phases draw (the maps), draws them, and
// then fetches the same step's weights and gradients (sooner when a phase or the inspector
// needs them first: main.js, startLater) from the server's kept copy
// (api.keptStep): the step answer shrinks from every array to the maps, and the phases, views
// and inspector that need weights or gradients wait for them (never an error or a blank map).

import { api } from "./api.js";

export const MAP_FIELDS = ["z", "a", "delta", "grad_a", "argmax"];
export const LATER_FIELDS = ["grads", "params"];
const LATER_VIEWS = new Set(["W", "dW", "db", "W-before", "W-change", "W-after"]);

// Whether a card view shows weights or gradients.
export function needsLater(view) {
  return LATER_VIEWS.has(view);
}

// The kept copy lives in the memory of the server process that took the step: with several
// processes or hosts not routed by session, the fetch may reach one that never had it. After
// one such miss, every Step asks for everything at once (one larger answer, never a missing
// gradient) for the rest of this page's life.
let keptStepsReachable = true;

// What a Step asks for: the maps, and at once the weights and gradients if the chosen view
// shows them (the first thing drawn needs them) or if kept steps proved unreachable.
export function stepFields(viewMode) {
  return needsLater(viewMode) || !keptStepsReachable ? [...MAP_FIELDS, ...LATER_FIELDS] : MAP_FIELDS;
}

// Starts fetching what a step record lacks: record.later = {state: "loading" | "ready" |
// "gone", message, promise}; the promise never rejects. On arrival the arrays join
// record.answer and record.fields.
export function fetchLater(record, sessionId) {
  const missing = LATER_FIELDS.filter((field) => !record.fields.has(field));
  if (missing.length === 0) return;
  const step = record.step.step;
  const later = { state: "loading", message: "" };
  later.promise = api.keptStep(sessionId, step, missing).then(
    (rest) => {
      record.answer.merge(rest);
      for (const field of missing) record.fields.add(field);
      later.state = "ready";
    },
    (error) => {
      later.state = "gone";
      if (error.status === 404 || error.status === 409) keptStepsReachable = false;
      later.message = error.status === 404 || error.status === 409
        ? `The weights and gradients of step ${step} are no longer available: the server keeps only the latest step's, for a while. Press Step again: from now on each step brings its weights and gradients with its maps.`
        : `The weights and gradients of step ${step} could not be fetched (${error.message}). Press Step again to take a new step and see its weights and gradients.`;
    },
  );
  record.later = later;
}
