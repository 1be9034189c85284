// A preset's own example inputs (the notes' worked example: a 3×3 X with the target that
// makes dL/dO exactly the notes' numbers). When the session's preset has one, the page
// traces it instead of a digit, with an offer to go back to the chosen digit.

import { el } from "../dom.js";

// The page's input record for a preset's first example, or null.
export function presetExample(presets, presetName) {
  const preset = presets.find((p) => p.name === presetName);
  const example = preset && preset.examples && preset.examples[0];
  if (!example) return null;
  return { kind: "example", name: example.name, label: null, description: example.description, pixels: example.input };
}

// A note under the input preview saying which example is traced, with a button that traces
// the chosen digit instead (the note goes when anything else is traced).
export function showExampleNote(example, onUseDigit) {
  let note = document.getElementById("example-note");
  if (!example) {
    if (note) note.hidden = true;
    return;
  }
  if (!note) {
    note = el("div", { id: "example-note", className: "example-note", role: "status" });
    document.getElementById("input-caption").closest(".current-input").after(note);
  }
  const back = el("button", { type: "button", className: "ghost", text: "Trace the chosen digit instead" });
  back.addEventListener("click", onUseDigit);
  note.replaceChildren(el("p", { text: `Traced instead of the digit above: the preset's example "${example.name}" — ${example.description}.` }), back);
  note.hidden = false;
}
