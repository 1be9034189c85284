// Helpers shared by the inspector's arithmetic (arithmetic.js) and its backward pictures
// (backward.js): a layer's geometry, where a padded input cell reads from (zeros or the
// circular wrap), the kernel as the forward pass applies it (rotated for a true
// convolution), and sums checked against the engine's value.

import { asChannels } from "../views/viewmodel.js";

const FLOAT32_RELATIVE = 1e-4;

export const idx = (...parts) => `[${parts.join(",")}]`;

export function layerInput(trace, index) {
  return index === 0 ? asChannels(trace.input) : trace.layers[index - 1].a;
}

function pairOf(value, fallback) {
  if (value == null) return [fallback, fallback];
  return Array.isArray(value) ? value : [value, value];
}

export function geometry(layer) {
  const spec = layer.spec || {};
  if (layer.type === "conv") {
    return {
      kernel: pairOf(spec.kernel),
      stride: pairOf(spec.stride, 1),
      padding: pairOf(spec.padding, 0),
      circular: spec.padding_mode === "circular",
      convolution: spec.operation === "convolution",
    };
  }
  const size = pairOf(spec.size);
  return { kernel: size, stride: pairOf(spec.stride ?? spec.size), padding: [0, 0], circular: false, convolution: false };
}

// Sum of terms in float64, and whether it matches the engine's (float32) value.
export function compare(computed, engine, scale) {
  const tolerance = FLOAT32_RELATIVE * Math.max(Math.abs(engine), scale, 1e-6) + 1e-7;
  return { computed, engine, match: Math.abs(computed - engine) <= tolerance };
}

export function sumTerms(rows, key = "product") {
  let total = 0;
  let scale = 0;
  for (const row of rows) {
    total += row[key];
    scale += Math.abs(row[key]);
  }
  return { total, scale };
}

// What the padded plane holds at (row, col), given in unpadded coordinates (so -1 is the
// first padding row): the input value, a zero of the padding, or, with circular padding,
// the input value the plane wraps around to.
export function paddedCell(plane, row, col, circular) {
  const H = plane.length;
  const W = plane[0].length;
  if (row >= 0 && col >= 0 && row < H && col < W) return { value: plane[row][col], kind: "", row, col };
  if (!circular) return { value: 0, kind: "pad", row, col };
  const wrappedRow = ((row % H) + H) % H;
  const wrappedCol = ((col % W) + W) % W;
  return { value: plane[wrappedRow][wrappedCol], kind: "wrap", row: wrappedRow, col: wrappedCol };
}

// The weight that the forward pass multiplies with window position (r, s): W[f,c,r,s] for
// cross-correlation, W[f,c,HH-1-r,WW-1-s] for the true convolution (kernel rotated 180°).
export function kernelIndex(geo, r, s) {
  return geo.convolution ? [geo.kernel[0] - 1 - r, geo.kernel[1] - 1 - s] : [r, s];
}
