// The backward pass as pictures for the inspector: the grids that, multiplied cell by cell
// and summed, give a gradient the engine computed. Every operand is read from the trace;
// the only arithmetic here is the products and sums on display (the inspector checks each
// sum against the engine's value).
//
// A picture is {caption, items: [grid | operator text], sum?: {label, value}}; a grid is
// {role, caption, cells: [[{v, kind, title}]]} with kind "" (a value), "pad" (zero padding),
// "dil" (a zero the stride dilation inserted), "wrap" (circular padding), "hit" (the cell the
// story is about) or "winner" (a max-pool winner). Marks outline cells on the strip's cards:
// {index, views, cells: [{map, i, j, h, w}], color}.

import { COLORS } from "../config.js";
import { idx, layerInput, geometry, paddedCell, kernelIndex } from "./terms.js";

// How many pictures a story shows before folding the rest away (the sums use all of them).
export const PICTURES_SHOWN = 4;

const cell = (v, kind = "", title = "") => ({ v, kind, title });

function grid(role, caption, cells) {
  return { role, caption, cells };
}

function sortByMagnitude(pictures) {
  return pictures.sort((p, q) => Math.abs(q.sum.value) - Math.abs(p.sum.value));
}

// The gather reading of dL/da[c, i, j] of the input of conv layer m: for each filter f,
// the window of δ_m[f] (dilated by the stride, padded by kernel − 1 − padding) that the
// 180°-rotated kernel covers when centred on (i, j), the two multiplied cell by cell.
// Circular padding has no single such window (the input appears at several padded
// places), so it is told by the scatter reading alone (null here).
export function convGather(trace, m, element) {
  const layer = trace.layers[m];
  const geo = geometry(layer);
  if (geo.circular) return null;
  const [c, i, j] = element;
  const [HH, WW] = geo.kernel;
  const [s0, s1] = geo.stride;
  const [p0, p1] = geo.padding;
  const W = layer.params.W;
  const pictures = [];
  const marks = [];
  let total = 0;
  let scale = 0;
  for (let f = 0; f < layer.delta.length; f++) {
    const delta = layer.delta[f];
    const Ho = delta.length;
    const Wo = delta[0].length;
    const window = [];
    const kernel = [];
    const products = [];
    let sum = 0;
    for (let rr = 0; rr < HH; rr++) {
      const wLine = [];
      const kLine = [];
      const pLine = [];
      const t = i + p0 - (HH - 1) + rr; // row of the dilated δ plane under window row rr
      for (let ss = 0; ss < WW; ss++) {
        const u = j + p1 - (WW - 1) + ss;
        let entry;
        if (t < 0 || u < 0 || t > (Ho - 1) * s0 || u > (Wo - 1) * s1) entry = cell(0, "pad", "zero padding of the full convolution");
        else if (t % s0 !== 0 || u % s1 !== 0) entry = cell(0, "dil", `a zero inserted by the stride-${s0 === s1 ? s0 : `${s0}×${s1}`} dilation`);
        else entry = cell(delta[t / s0][u / s1], "", `δ_${layer.name}${idx(f, t / s0, u / s1)}`);
        // Window cell (rr, ss) meets the kernel the forward pass applied, rotated 180°.
        const [kr, ks] = kernelIndex(geo, HH - 1 - rr, WW - 1 - ss);
        const weight = W[f][c][kr][ks];
        const product = entry.v * weight;
        sum += product;
        scale += Math.abs(product);
        wLine.push(entry);
        kLine.push(cell(weight, "", `W${idx(f, c, kr, ks)}`));
        pLine.push(cell(product, entry.kind, `${entry.title} × W${idx(f, c, kr, ks)}`));
      }
      window.push(wLine);
      kernel.push(kLine);
      products.push(pLine);
    }
    total += sum;
    const rowFrom = Math.ceil(Math.max(0, i + p0 - HH + 1) / s0);
    const rowTo = Math.floor(Math.min((Ho - 1) * s0, i + p0) / s0);
    const colFrom = Math.ceil(Math.max(0, j + p1 - WW + 1) / s1);
    const colTo = Math.floor(Math.min((Wo - 1) * s1, j + p1) / s1);
    if (rowFrom <= rowTo && colFrom <= colTo) marks.push({ map: f, i: rowFrom, j: colFrom, h: rowTo - rowFrom + 1, w: colTo - colFrom + 1 });
    const dilated = s0 > 1 || s1 > 1;
    pictures.push({
      caption: `filter ${f}`,
      items: [
        grid("bw-delta-window", `δ_${layer.name}[${f}]${dilated ? " dilated," : ""} padded, window at (${i}, ${j})`, window),
        "⊙",
        grid("bw-kernel-rot", geo.convolution ? `W[${f},${c}] (the forward's rotation undone)` : `W[${f},${c}] rotated 180°`, kernel),
        "=",
        grid("bw-products", "products", products),
      ],
      sum: { label: `Σ filter ${f}`, value: sum },
    });
  }
  return {
    pictures: {
      intro:
        `Reading 1 — gather (the full convolution): ${layer.delta.length === 1 ? "for the one filter" : `for each of the ${layer.delta.length} filters`} of ${layer.name}, its delta map ` +
        `${s0 > 1 || s1 > 1 ? "is dilated by the stride (zeros between the cells, marked ·) and " : ""}${fullPadding(HH - 1 - p0, WW - 1 - p1)}, ` +
        (geo.convolution
          ? `and the kernel is laid over it at (${i}, ${j}) as stored: the forward pass rotated it, the backward pass rotates it back. `
          : `the kernel is rotated 180° and laid over it at (${i}, ${j}). `) +
        (layer.delta.length === 1 ? "The products summed give dL/da." : "The products summed over every filter give dL/da. Largest filter sums first."),
      shown: sortByMagnitude(pictures),
      total,
    },
    scale,
    marks: marks.length ? [{ index: m, views: ["delta"], cells: marks, color: COLORS.winner }] : [],
  };
}

// The padding of the full convolution, kernel − 1 − padding per side: negative when the
// forward padding exceeds kernel − 1 (then the delta map is cropped instead).
function fullPadding(rows, cols) {
  const part = (n, what) => (n >= 0 ? `${n} ${what}${n === 1 ? "" : "s"} of zero padding` : `${-n} ${what}${n === -1 ? "" : "s"} cropped`);
  const text = rows === cols ? part(rows, "row and column").replace("row and columns", "rows and columns") : `${part(rows, "row")} and ${part(cols, "column")}`;
  return `gets ${text} on each side (kernel − 1 − padding; grey)`;
}

// The scatter reading of the same numbers: every δ cell of conv layer m sends δ·W back over
// its own receptive field; input (c, i, j) collects what lands on it. Walks every output
// position, so the circular wrap (an input reached from the far edge) is included.
export function convScatter(trace, m, element) {
  const layer = trace.layers[m];
  const geo = geometry(layer);
  const [c, i, j] = element;
  const [HH, WW] = geo.kernel;
  const plane = layerInput(trace, m)[c];
  const W = layer.params.W;
  const contributions = [];
  const groups = [];
  for (let f = 0; f < layer.delta.length; f++) {
    const delta = layer.delta[f];
    for (let oi = 0; oi < delta.length; oi++) {
      for (let oj = 0; oj < delta[0].length; oj++) {
        let landed = null;
        for (let r = 0; r < HH; r++) {
          for (let s = 0; s < WW; s++) {
            const at = paddedCell(plane, oi * geo.stride[0] + r - geo.padding[0], oj * geo.stride[1] + s - geo.padding[1], geo.circular);
            if (at.kind === "pad" || at.row !== i || at.col !== j) continue;
            const [kr, ks] = kernelIndex(geo, r, s);
            const term = { f, oi, oj, r, s, kr, ks, delta: delta[oi][oj], weight: W[f][c][kr][ks] };
            contributions.push(term);
            (landed ||= []).push(term);
          }
        }
        if (landed) groups.push({ f, oi, oj, terms: landed });
      }
    }
  }
  return { contributions, groups };
}

export function scatterPictures(trace, m, element, groups) {
  const layer = trace.layers[m];
  const geo = geometry(layer);
  const [c] = element;
  const [HH, WW] = geo.kernel;
  const W = layer.params.W;
  const pictures = groups.map(({ f, oi, oj, terms }) => {
    const d = layer.delta[f][oi][oj];
    const hits = new Set(terms.map((t) => `${t.r},${t.s}`));
    const cells = [];
    for (let r = 0; r < HH; r++) {
      const line = [];
      for (let s = 0; s < WW; s++) {
        const [kr, ks] = kernelIndex(geo, r, s);
        line.push(cell(d * W[f][c][kr][ks], hits.has(`${r},${s}`) ? "hit" : "", `δ${idx(f, oi, oj)} × W${idx(f, c, kr, ks)}`));
      }
      cells.push(line);
    }
    let sum = 0;
    for (const t of terms) sum += t.delta * t.weight;
    return {
      caption: `δ_${layer.name}${idx(f, oi, oj)} = ${d.toPrecision(3)}`,
      items: [grid("bw-scatter", `δ${idx(f, oi, oj)}·W[${f},${c}] over its window`, cells)],
      sum: { label: "lands on this cell", value: sum },
    };
  });
  return sortByMagnitude(pictures);
}

// Through a pooling layer m, back to element (c, i, j) of its input: every window that holds
// the cell, its delta, and where that delta goes (the winner, or spread evenly).
export function poolRouting(trace, m, element) {
  const layer = trace.layers[m];
  const { kernel, stride } = geometry(layer);
  const [c, i, j] = element;
  const x = layerInput(trace, m)[c];
  const planeW = x[0].length;
  const delta = layer.delta[c];
  const area = kernel[0] * kernel[1];
  const pictures = [];
  const marks = [];
  for (let oi = 0; oi < delta.length; oi++) {
    if (i < oi * stride[0] || i >= oi * stride[0] + kernel[0]) continue;
    for (let oj = 0; oj < delta[0].length; oj++) {
      if (j < oj * stride[1] || j >= oj * stride[1] + kernel[1]) continue;
      const d = delta[oi][oj];
      const winner = layer.type === "maxpool" ? layer.argmax[c][oi][oj] : null;
      const values = [];
      const routed = [];
      let landed = 0;
      for (let r = 0; r < kernel[0]; r++) {
        const vLine = [];
        const rLine = [];
        for (let s = 0; s < kernel[1]; s++) {
          const row = oi * stride[0] + r;
          const col = oj * stride[1] + s;
          const isWinner = winner === row * planeW + col;
          const here = row === i && col === j;
          const share = layer.type === "maxpool" ? (isWinner ? d : 0) : d / area;
          if (here) landed += share;
          vLine.push(cell(x[row][col], isWinner ? "winner" : here ? "hit" : "", `input${idx(c, row, col)}${isWinner ? " (winner)" : ""}`));
          rLine.push(cell(share, here ? "hit" : isWinner ? "winner" : "", here ? "this cell" : ""));
        }
        values.push(vLine);
        routed.push(rLine);
      }
      marks.push({ map: c, i: oi, j: oj });
      pictures.push({
        caption: `window ${idx(c, oi, oj)}, δ = ${d.toPrecision(4)}`,
        items: [
          grid("bw-pool-window", layer.type === "maxpool" ? "the window, winner outlined" : "the window", values),
          "→",
          grid("bw-pool-routed", layer.type === "maxpool" ? "δ routed to the winner" : `δ / ${area} to every cell`, routed),
        ],
        sum: { label: "reaches this cell", value: landed },
      });
    }
  }
  return {
    pictures: {
      intro:
        layer.type === "maxpool"
          ? `Through ${layer.name}: the delta of each window goes to the input that won its max, unchanged; the other inputs get 0.`
          : `Through ${layer.name}: the delta of each window is spread evenly, δ / ${area}, over its ${area} inputs.`,
      shown: pictures,
    },
    marks: [{ index: m, views: ["delta"], cells: marks, color: COLORS.winner }],
  };
}

// A vector as a grid a few columns wide, so a long one stays on screen.
function wrapped(values, kinds, titles) {
  const columns = values.length <= 12 ? values.length : values.length <= 144 ? 12 : 24;
  const rows = [];
  for (let start = 0; start < values.length; start += columns) {
    const line = [];
    for (let k = start; k < Math.min(start + columns, values.length); k++) line.push(cell(values[k], kinds[k] || "", titles[k]));
    rows.push(line);
  }
  return rows;
}

// Through dense layer m, back to element k of its input: δ of every unit times column k of W.
export function denseColumn(trace, m, k) {
  const layer = trace.layers[m];
  const W = layer.params.W;
  const delta = layer.delta;
  const column = delta.map((_, u) => W[u][k]);
  const products = delta.map((d, u) => d * W[u][k]);
  const units = delta.map((_, u) => u);
  const columns = delta.length <= 12 ? delta.length : delta.length <= 144 ? 12 : 24;
  return {
    pictures: {
      intro:
        `Through ${layer.name}: the delta of every unit u times the weight W[u, ${k}] that carried input ${k} to it (column ${k} of W), summed.` +
        (delta.length > columns ? ` The ${delta.length} units are laid out in rows of ${columns}, unit u at row ⌊u/${columns}⌋, column u mod ${columns}.` : ""),
      shown: [
        {
          caption: `${delta.length} units`,
          items: [
            grid("bw-dense-delta", `δ_${layer.name}`, wrapped(delta, [], units.map((u) => `δ[${u}]`))),
            "⊙",
            grid("bw-dense-column", `W[·, ${k}]`, wrapped(column, [], units.map((u) => `W${idx(u, k)}`))),
            "=",
            grid("bw-products", "products", wrapped(products, [], units.map((u) => `δ[${u}]·W${idx(u, k)}`))),
          ],
          sum: { label: "Σ", value: products.reduce((a, b) => a + b, 0) },
        },
      ],
    },
    marks: [],
  };
}

// dW[f, c, r, s] of conv layer `index`: the input plane c shifted by the window position
// that met this weight, beside filter f's delta map, multiplied cell by cell.
export function convWeightPicture(trace, index, f, c, r, s) {
  const layer = trace.layers[index];
  const geo = geometry(layer);
  const [wr, ws] = kernelIndex(geo, r, s);
  const plane = layerInput(trace, index)[c];
  const delta = layer.delta[f];
  const Ho = delta.length;
  const Wo = delta[0].length;
  const rows = [];
  const inputs = [];
  const deltas = [];
  const products = [];
  let sum = 0;
  for (let oi = 0; oi < Ho; oi++) {
    const xLine = [];
    const dLine = [];
    const pLine = [];
    for (let oj = 0; oj < Wo; oj++) {
      const row = oi * geo.stride[0] + wr - geo.padding[0];
      const col = oj * geo.stride[1] + ws - geo.padding[1];
      const at = paddedCell(plane, row, col, geo.circular);
      const name = at.kind === "pad" ? `pad${idx(c, row, col)}` : `x${idx(c, at.row, at.col)}`;
      const d = delta[oi][oj];
      const product = at.value * d;
      sum += product;
      rows.push({ a: name, av: at.value, b: `δ${idx(f, oi, oj)}`, bv: d, product });
      xLine.push(cell(at.value, at.kind, at.kind === "wrap" ? `wraps around to ${name}` : name));
      dLine.push(cell(d, "", `δ${idx(f, oi, oj)}`));
      pLine.push(cell(product, at.kind, `${name} × δ${idx(f, oi, oj)}`));
    }
    inputs.push(xLine);
    deltas.push(dLine);
    products.push(pLine);
  }
  const spanH = geo.stride[0] * (Ho - 1) + 1;
  const spanW = geo.stride[1] * (Wo - 1) + 1;
  const strided = geo.stride[0] > 1 || geo.stride[1] > 1;
  return {
    rows,
    pictures: {
      intro:
        `The input plane ${c} as the window saw it at position (${wr}, ${ws}) of every slide: rows ${wr}−${geo.padding[0]} … and columns ${ws}−${geo.padding[1]} …` +
        `${strided ? ` every ${geo.stride[0]}${geo.stride[0] !== geo.stride[1] ? `×${geo.stride[1]}` : ""}` : ""} (${Ho}×${Wo} cells, ` +
        `${geo.circular ? "wrapped around" : "zero padding grey"}), beside filter ${f}'s delta map; their products summed give dW.`,
      shown: [
        {
          caption: `dW${idx(f, c, r, s)}`,
          items: [
            grid("bw-dw-input", `x[${c}] shifted by (${wr}, ${ws})`, inputs),
            "⊙",
            grid("bw-dw-delta", `δ_${layer.name}[${f}]`, deltas),
            "=",
            grid("bw-products", "products", products),
          ],
          sum: { label: "Σ", value: sum },
        },
      ],
    },
    marks: [
      { index: index - 1, views: ["a", "z"], cells: [{ map: c, i: wr - geo.padding[0], j: ws - geo.padding[1], h: spanH, w: spanW }], color: COLORS.winner },
      { index, views: ["delta"], cells: [{ map: f, i: 0, j: 0, h: Ho, w: Wo }], color: COLORS.winner },
    ],
  };
}

// db[f] of a conv layer: filter f's delta map and its sum.
export function biasPicture(trace, index, f) {
  const layer = trace.layers[index];
  const delta = layer.delta[f];
  if (!Array.isArray(delta)) return null;
  const cells = delta.map((line, oi) => line.map((d, oj) => cell(d, "", `δ${idx(f, oi, oj)}`)));
  let sum = 0;
  for (const line of delta) for (const d of line) sum += d;
  return {
    pictures: {
      intro: `Filter ${f}'s delta map: every cell is an output the bias was added to.`,
      shown: [{ caption: `δ_${layer.name}[${f}]`, items: [grid("bw-bias-delta", `δ_${layer.name}[${f}]`, cells)], sum: { label: "Σ", value: sum } }],
    },
    marks: [{ index, views: ["delta"], cells: [{ map: f, i: 0, j: 0, h: delta.length, w: delta[0].length }], color: COLORS.winner }],
  };
}
