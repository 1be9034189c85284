// The architecture editor's text: a spec printed with one layer per line, and the text
// range of the layer an error message names ("layer 2 (conv): ...").

export function formatSpec(spec) {
  const lines = ["{"];
  const keys = Object.keys(spec).filter((key) => key !== "layers");
  const entries = [];
  if ("input_shape" in spec) entries.push(`  "input_shape": ${JSON.stringify(spec.input_shape)}`);
  if (Array.isArray(spec.layers)) {
    const layers = spec.layers.map((layer) => `    ${compact(layer)}`);
    entries.push(`  "layers": [\n${layers.join(",\n")}\n  ]`);
  }
  for (const key of keys) {
    if (key === "input_shape") continue;
    entries.push(`  ${JSON.stringify(key)}: ${JSON.stringify(spec[key])}`);
  }
  lines.push(entries.join(",\n"));
  lines.push("}");
  return lines.join("\n");
}

function compact(value) {
  return JSON.stringify(value).replace(/":/g, '": ').replace(/,"/g, ', "').replace(/,(\d)/g, ", $1");
}

// Finds the text of layer `n` inside the "layers" array of `text` by scanning braces, so it
// works on any formatting. Returns {start, end} or null.
export function locateLayer(text, message) {
  const match = /layer (\d+)/.exec(message);
  if (!match) return null;
  const wanted = Number(match[1]);
  const layersAt = text.indexOf('"layers"');
  if (layersAt < 0) return null;
  const open = text.indexOf("[", layersAt);
  if (open < 0) return null;
  let depth = 0;
  let count = -1;
  let start = -1;
  let inString = false;
  for (let k = open + 1; k < text.length; k++) {
    const ch = text[k];
    if (inString) {
      if (ch === "\\") k += 1;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    else if (ch === "{") {
      if (depth === 0) {
        count += 1;
        start = k;
      }
      depth += 1;
    } else if (ch === "}") {
      depth -= 1;
      if (depth === 0 && count === wanted) return { start, end: k + 1 };
    } else if (ch === "]" && depth === 0) {
      return null;
    }
  }
  return null;
}
