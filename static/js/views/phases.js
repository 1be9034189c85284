// The phases of one training iteration, in the order the timeline plays them, and what
// each phase means for every layer card: which quantity the card shows when the view
// follows the animation, and whether the layer is done, active or not reached yet.

import { INPUT_LAYER } from "./viewmodel.js";

export function buildPhases(trace, hasUpdate) {
  const layers = trace.layers;
  const phases = [{ kind: "input", view: "a", label: "The input x enters the network" }];
  layers.forEach((layer, index) => {
    phases.push({ kind: "forward", layer: index, view: "a", label: `Forward: ${layer.name} ${forwardVerb(layer)}` });
  });
  phases.push({ kind: "loss", view: "a", label: "The loss compares the prediction with the label" });
  for (let index = layers.length - 1; index >= 0; index--) {
    phases.push({ kind: "backward", layer: index, view: "delta", label: `Backward: δ of ${layers[index].name} ${backwardVerb(layers, index)}` });
  }
  phases.push({ kind: "input-grad", view: "delta", label: "Backward: dL/dx, how each input pixel moves the loss" });
  phases.push({ kind: "gradients", view: "dW", label: "Gradients: dL/dW = input ⋆ δ, dL/db = Σ δ for every layer with weights" });
  if (hasUpdate) {
    phases.push({ kind: "update-before", view: "W-before", label: "Update: the weights before" });
    phases.push({ kind: "update-change", view: "W-change", label: "Update: the change applied (−lr·gradient for SGD)" });
    phases.push({ kind: "update-after", view: "W-after", label: "Update: the weights after" });
  }
  return phases;
}

function forwardVerb(layer) {
  switch (layer.type) {
    case "conv":
      return "correlates its kernels with the input: z = W ⋆ x + b, a = g(z)";
    case "dense":
      return "computes z = W·a_prev + b, a = g(z)";
    case "maxpool":
      return "keeps the largest value of each window";
    case "avgpool":
      return "averages each window";
    case "flatten":
      return "lays the maps out as one vector";
    default:
      return "";
  }
}

function backwardVerb(layers, index) {
  if (index === layers.length - 1) return "= dL/dz at the output, straight from the loss";
  const next = layers[index + 1];
  const times = layers[index].type === "conv" || layers[index].type === "dense" ? ", times g'(z)" : "";
  switch (next.type) {
    case "conv":
      return `from ${next.name}'s δ: full convolution with the 180°-rotated kernel${times}`;
    case "dense":
      return `from ${next.name}'s δ through Wᵀ${times}`;
    case "maxpool":
      return `from ${next.name}'s δ, routed to each window's winner${times}`;
    case "avgpool":
      return `from ${next.name}'s δ, spread evenly over each window${times}`;
    case "flatten":
      return `from ${next.name}'s δ, reshaped back into maps${times}`;
    default:
      return "";
  }
}

// The index of the first phase of a kind (for the Forward, Backward and Update buttons).
export function phaseIndex(phases, kind) {
  return phases.findIndex((p) => p.kind === kind);
}

// "pending" | "active" | "done" for a layer card (INPUT_LAYER is the input card) in a phase.
export function layerState(phase, index) {
  switch (phase.kind) {
    case "input":
      return index === INPUT_LAYER ? "active" : "pending";
    case "forward":
      if (index === phase.layer) return "active";
      return index < phase.layer ? "done" : "pending";
    case "loss":
      return "done";
    case "backward":
      if (index === phase.layer) return "active";
      return index > phase.layer ? "done" : "pending";
    case "input-grad":
      return index === INPUT_LAYER ? "active" : "done";
    default:
      return "done";
  }
}
