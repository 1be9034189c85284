// Pictures drawn from numbers, shared by the strip's maps and the saliency: colour lookups
// of the colour scales, a value's step on them, RGBA pixels as an uncompressed BMP data URL
// (what a Plotly layout image shows as it is: no canvas, no PNG compression per draw), and
// the HTML colour bar that labels a picture's scale.

// 256 colours of a colour scale (RGB triples), interpolated linearly between its stops as
// Plotly does; made once per scale.
const lookups = new Map();
export function colourLookup(scale) {
  const key = JSON.stringify(scale);
  if (!lookups.has(key)) {
    const stops = scale.map(([at, colour]) => [at, hexToRgb(colour)]);
    const table = new Uint8ClampedArray(256 * 3);
    for (let n = 0; n < 256; n++) {
      const t = n / 255;
      let s = 0;
      while (s < stops.length - 2 && t > stops[s + 1][0]) s++;
      const [t0, c0] = stops[s];
      const [t1, c1] = stops[s + 1];
      const f = t1 > t0 ? Math.max(0, Math.min(1, (t - t0) / (t1 - t0))) : 0;
      for (let ch = 0; ch < 3; ch++) table[n * 3 + ch] = Math.round(c0[ch] + (c1[ch] - c0[ch]) * f);
    }
    lookups.set(key, table);
  }
  return lookups.get(key);
}

// A colour lookup (256 RGB triples) as opaque RGBA words.
const packedTables = new WeakMap();
export function packedColours(lookup) {
  let packed = packedTables.get(lookup);
  if (!packed) {
    packed = new Uint32Array(256);
    for (let n = 0; n < 256; n++) packed[n] = (255 << 24 | lookup[n * 3 + 2] << 16 | lookup[n * 3 + 1] << 8 | lookup[n * 3]) >>> 0;
    packedTables.set(lookup, packed);
  }
  return packed;
}
// A value's step (0-255) on the colour scale, as every picture and the zoom round it.
export function colourStep(value, lo, span) {
  const t = Math.round(((value - lo) / span) * 255);
  return t < 0 ? 0 : t > 255 ? 255 : t;
}

// RGBA pixels (4 bytes each, rows top to bottom) as a 32-bit BMP data URL: a BITMAPV4HEADER
// with bit fields naming those byte positions, alpha included (gutters stay transparent), and a
// negative height for rows stored top to bottom.
const BMP_HEADER_BYTES = 14 + 108;
export function bmpDataUrl(pixels, width, height) {
  const size = BMP_HEADER_BYTES + pixels.length;
  const bytes = new Uint8Array(size);
  const header = new DataView(bytes.buffer);
  bytes[0] = 0x42; // "BM"
  bytes[1] = 0x4d;
  header.setUint32(2, size, true);
  header.setUint32(10, BMP_HEADER_BYTES, true); // where the pixels start
  header.setUint32(14, 108, true); // BITMAPV4HEADER
  header.setInt32(18, width, true);
  header.setInt32(22, -height, true);
  header.setUint16(26, 1, true); // planes
  header.setUint16(28, 32, true); // bits per pixel
  header.setUint32(30, 3, true); // BI_BITFIELDS
  header.setUint32(34, pixels.length, true);
  header.setUint32(54, 0x000000ff, true); // red: the first byte of each pixel
  header.setUint32(58, 0x0000ff00, true); // green
  header.setUint32(62, 0x00ff0000, true); // blue
  header.setUint32(66, 0xff000000, true); // alpha
  header.setUint32(70, 0x57696e20, true); // "Win ": the sRGB colour space
  bytes.set(pixels, BMP_HEADER_BYTES);
  return `data:image/bmp;base64,${base64(bytes)}`;
}

// Base64 of bytes, three at a time through a table of every pair of base64 digits, written as
// ASCII and decoded to a string in one call: no intermediate binary string for btoa.
const BASE64_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_PAIRS = new Uint16Array(4096);
for (let n = 0; n < 4096; n++) BASE64_PAIRS[n] = BASE64_DIGITS.charCodeAt(n >> 6) | (BASE64_DIGITS.charCodeAt(n & 63) << 8);
const ASCII = new TextDecoder("latin1");
function base64(bytes) {
  if (!LITTLE_ENDIAN) {
    let binary = "";
    for (let at = 0; at < bytes.length; at += 0x8000) binary += String.fromCharCode.apply(null, bytes.subarray(at, at + 0x8000));
    return btoa(binary);
  }
  const whole = bytes.length - (bytes.length % 3);
  const out = new Uint8Array(Math.ceil(bytes.length / 3) * 4);
  const pairs = new Uint16Array(out.buffer, 0, whole / 3 * 2);
  for (let i = 0, o = 0; i < whole; i += 3, o += 2) {
    const triple = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    pairs[o] = BASE64_PAIRS[triple >> 12];
    pairs[o + 1] = BASE64_PAIRS[triple & 4095];
  }
  if (whole < bytes.length) {
    const rest = bytes.length - whole;
    const triple = (bytes[whole] << 16) | (rest === 2 ? bytes[whole + 1] << 8 : 0);
    const at = (whole / 3) * 4;
    out[at] = BASE64_DIGITS.charCodeAt(triple >> 18);
    out[at + 1] = BASE64_DIGITS.charCodeAt((triple >> 12) & 63);
    out[at + 2] = rest === 2 ? BASE64_DIGITS.charCodeAt((triple >> 6) & 63) : 61; // "="
    out[at + 3] = 61;
  }
  return ASCII.decode(out);
}

// ImageData is RGBA bytes; a Uint32Array over it reads them in the machine's byte order.
export const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

// The legend of a card's colour scale: the scale as a CSS gradient, labelled at both ends
// (and at zero for a signed range); per-map ranges are labelled −max/+max (min/max).
export function drawColourBar(bar, model, width) {
  const [lo, hi] = model.range;
  const stops = model.colorscale.map(([at, colour]) => `${colour} ${(at * 100).toFixed(1)}%`).join(", ");
  let ticks;
  if (model.perMap) {
    ticks = model.signed ? [[0, "−max"], [0.5, "0"], [1, "+max"]] : [[0, "min"], [1, "max"]];
  } else {
    const middle = lo < 0 && hi > 0 ? 0 : (lo + hi) / 2;
    ticks = [lo, middle, hi].map((v) => [(v - lo) / (hi - lo), formatTick(v)]);
  }
  const widthPx = `${width}px`;
  if (bar.style.width !== widthPx) bar.style.width = widthPx;
  bar.hidden = false;
  const label = `colour scale of ${model.colorbarTitle}: ${ticks.map((t) => t[1]).join(", ")}`;
  if (bar.getAttribute("aria-label") !== label) bar.setAttribute("aria-label", label);
  // Built once per card; a step usually changes only the tick labels' numbers, so only what
  // differs is written (every write is style and layout work before the maps can be shown).
  let ramp = bar.querySelector(".colorbar-ramp");
  let labels = bar.querySelector(".colorbar-ticks");
  if (!ramp) {
    ramp = document.createElement("div");
    ramp.className = "colorbar-ramp";
    labels = document.createElement("div");
    labels.className = "colorbar-ticks";
    bar.replaceChildren(ramp, labels);
  }
  const background = `linear-gradient(to right, ${stops})`;
  if (ramp.dataset.stops !== stops) {
    ramp.style.background = background;
    ramp.dataset.stops = stops;
  }
  while (labels.children.length > ticks.length) labels.lastElementChild.remove();
  while (labels.children.length < ticks.length) labels.append(document.createElement("span"));
  ticks.forEach(([at, text], n) => {
    const tick = labels.children[n];
    if (tick.textContent !== text) tick.textContent = text;
    const left = `${(at * 100).toFixed(2)}%`;
    if (tick.style.left !== left) tick.style.left = left;
    const edge = at <= 0 ? "start" : at >= 1 ? "end" : "middle";
    if (tick.dataset.edge !== edge) tick.dataset.edge = edge;
  });
}

function formatTick(value) {
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 0.01 && magnitude < 1000) return String(Number(value.toPrecision(2)));
  return value.toExponential(0);
}

export function hexToRgb(colour) {
  const hex = colour.replace("#", "");
  return [0, 2, 4].map((k) => parseInt(hex.slice(k, k + 2), 16));
}

