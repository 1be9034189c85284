// Renders the arithmetic of a clicked cell (from arithmetic.js) as HTML: the formula
// with its first terms, the receptive field and kernel side by side, the table of terms,
// and the sum next to the engine's value.

import { INSPECTOR_MAX_ROWS, INSPECTOR_PREVIEW_TERMS } from "./config.js";
import { formatNumber, formatPrecise, formatFactor, formatShort } from "./format.js";

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

export function renderInspector(container, title, sections) {
  const body = el("div", { className: "inspector-body" });
  for (const section of sections) body.append(renderSection(section));
  container.querySelector('[data-role="inspector-title"]').textContent = title;
  const slot = container.querySelector('[data-role="inspector-content"]');
  slot.replaceChildren(body);
}

function renderSection(section) {
  const node = el("section", { className: "inspector-section" });
  node.append(el("h3", { text: section.heading }));
  if (section.explanation) node.append(el("p", { className: "inspector-explanation", text: section.explanation }));
  if (section.patch) node.append(renderPatch(section.patch));
  if (section.window) node.append(renderWindow(section.window));
  if (section.rows && section.rows.length > 0 && section.result) node.append(renderFormula(section));
  if (section.rows) node.append(renderTerms(section));
  if (section.result) node.append(renderResult(section));
  if (section.activation) node.append(renderActivation(section.activation));
  if (section.softmax) node.append(renderSoftmax(section.softmax));
  if (section.values) node.append(renderValues(section.values));
  return node;
}

// "z[0,3,4] = x·W + x·W + … + b = value", as in the notes' O11 = X11·F11 + X12·F12 + …
function renderFormula(section) {
  const terms = section.rows.filter((r) => r.bv !== null && r.bv !== undefined);
  const shown = terms.slice(0, INSPECTOR_PREVIEW_TERMS).map((r) => `${formatFactor(r.av)}·${formatFactor(r.bv)}`);
  const plainTerms = section.rows.filter((r) => r.bv === null || r.bv === undefined);
  const plainShown = plainTerms.slice(0, INSPECTOR_PREVIEW_TERMS).map((r) => formatFactor(r.av));
  const parts = [...shown, ...plainShown];
  const total = terms.length + plainTerms.length;
  let text = `${section.result.label} = ${parts.join(" + ")}`;
  if (total > parts.length) text += ` + … (${total} terms)`;
  if (section.bias) text += ` + ${formatFactor(section.bias.value)}`;
  if (section.divisor) text = `${section.result.label} = (${parts.join(" + ")}${total > parts.length ? " + …" : ""}) / ${section.divisor}`;
  text += ` = ${formatPrecise(section.result.computed)}`;
  return el("p", { className: "inspector-formula", text });
}

function renderPatch(patch) {
  const wrap = el("div", { className: "patch-grid" });
  const channels = Math.min(patch.channels, 8);
  for (let c = 0; c < channels; c++) {
    const pair = el("div", { className: "patch-pair" });
    const xTable = el("table", { className: "mini-grid", "aria-label": `receptive field, channel ${c}` });
    const wTable = el("table", { className: "mini-grid kernel", "aria-label": `kernel, channel ${c}` });
    for (let r = 0; r < patch.kernel[0]; r++) {
      const xRow = el("tr");
      const wRow = el("tr");
      for (let s = 0; s < patch.kernel[1]; s++) {
        const row = patch.i * patch.stride[0] + r - patch.padding[0];
        const col = patch.j * patch.stride[1] + s - patch.padding[1];
        const inside = row >= 0 && col >= 0 && row < patch.x[c].length && col < patch.x[c][0].length;
        xRow.append(el("td", { className: inside ? "" : "pad", text: inside ? formatShort(patch.x[c][row][col]) : "0" }));
        wRow.append(el("td", { text: formatShort(patch.W[patch.f][c][r][s]) }));
      }
      xTable.append(xRow);
      wTable.append(wRow);
    }
    pair.append(el("figure", {}, xTable, el("figcaption", { text: `x, channel ${c}` })));
    pair.append(el("span", { className: "patch-times", text: "⊙" }));
    pair.append(el("figure", {}, wTable, el("figcaption", { text: `W[${patch.f}, ${c}]` })));
    wrap.append(pair);
  }
  if (patch.channels > channels) wrap.append(el("p", { text: `… and ${patch.channels - channels} more channels (all in the table below).` }));
  return wrap;
}

function renderWindow(window) {
  const table = el("table", { className: "mini-grid window", "aria-label": "pooling window" });
  for (let r = 0; r < window.kernel[0]; r++) {
    const row = el("tr");
    for (let s = 0; s < window.kernel[1]; s++) {
      const cell = window.rows[r * window.kernel[1] + s];
      row.append(el("td", { className: cell.winner ? "winner" : "", text: formatShort(cell.av), title: `${cell.a}${cell.winner ? " (winner)" : ""}` }));
    }
    table.append(row);
  }
  return el("figure", { className: "window-figure" }, table, el("figcaption", { text: "the window (winner outlined)" }));
}

function renderTerms(section) {
  const rows = section.rows;
  const details = el("details", { className: "inspector-terms" });
  const zeros = rows.filter((r) => r.product === 0).length;
  const listed = rows.filter((r) => r.product !== 0);
  const summary = `${rows.length} term${rows.length === 1 ? "" : "s"}` + (zeros ? ` (${zeros} are exactly 0 and not listed)` : "");
  details.append(el("summary", { text: summary }));
  if (rows.length <= 30) details.open = true;
  const table = el("table", { className: "terms-table" });
  const columns = section.columns || ["a", "value", "b", "value", "product"];
  const head = el("tr");
  for (const name of columns) head.append(el("th", { scope: "col", text: name }));
  table.append(el("thead", {}, head));
  const bodyRows = el("tbody");
  for (const row of listed.slice(0, INSPECTOR_MAX_ROWS)) {
    const tr = el("tr");
    tr.append(el("td", { text: row.a }));
    tr.append(el("td", { className: "num", text: formatNumber(row.av) }));
    tr.append(el("td", { text: row.b || "" }));
    tr.append(el("td", { className: "num", text: row.bv === null || row.bv === undefined ? "" : formatNumber(row.bv) }));
    tr.append(el("td", { className: "num", text: formatNumber(row.product) }));
    bodyRows.append(tr);
  }
  table.append(bodyRows);
  if (listed.length > INSPECTOR_MAX_ROWS) {
    details.append(el("p", { text: `Showing the first ${INSPECTOR_MAX_ROWS} of ${listed.length} non-zero terms; the sum uses all of them.` }));
  }
  details.append(el("div", { className: "table-scroll" }, table));
  return details;
}

function renderResult(section) {
  const { label, computed, engine, match } = section.result;
  const what = section.divisor ? "sum / " + section.divisor : section.bias ? `Σ products + ${section.bias.label}` : section.rows ? "Σ terms" : "value";
  const node = el("p", {
    className: `inspector-result ${match ? "match" : "mismatch"}`,
    "data-role": "inspector-result",
    "data-computed": String(computed),
    "data-engine": String(engine),
    "data-match": String(match),
  });
  node.append(el("span", { text: `${what} = ` }), el("strong", { "data-role": "computed", text: formatPrecise(computed) }));
  node.append(el("span", { text: ` · engine's ${label} = ` }), el("strong", { "data-role": "engine", text: formatPrecise(engine) }));
  node.append(el("span", { className: "verdict", text: match ? " ✓ matches" : " ✗ differs" }));
  return node;
}

function renderActivation(act) {
  const node = el("div", { className: "inspector-activation" });
  node.append(el("p", { text: `then δ = dL/da · g'(z), with z = ${formatPrecise(act.z)} and ${act.formula} = ${formatNumber(act.derivative)}:` }));
  const line = el("p", {
    className: `inspector-result ${act.delta.match ? "match" : "mismatch"}`,
    "data-role": "inspector-delta",
    "data-computed": String(act.delta.computed),
    "data-engine": String(act.delta.engine),
  });
  line.append(
    el("span", { text: `${formatPrecise(act.gradA)} × ${formatNumber(act.derivative)} = ` }),
    el("strong", { text: formatPrecise(act.delta.computed) }),
    el("span", { text: ` · engine's ${act.label} = ` }),
    el("strong", { text: formatPrecise(act.delta.engine) }),
    el("span", { className: "verdict", text: act.delta.match ? " ✓ matches" : " ✗ differs" }),
  );
  node.append(line);
  return node;
}

function renderSoftmax(softmax) {
  const { k, rows, maxZ, sum, label, computed, engine, match } = softmax;
  const wrap = el("div", { className: "inspector-softmax" });
  const table = el("table", { className: "terms-table softmax-table", "data-role": "softmax-table" });
  const head = el("tr");
  for (const name of ["j", "z[j]", "z[j] − max z", "exp(z[j] − max z)"]) head.append(el("th", { scope: "col", text: name }));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  for (const row of rows) {
    const tr = el("tr", { className: row.j === k ? "chosen" : "", "data-exp": String(row.exp) });
    tr.append(el("td", { text: String(row.j) }));
    tr.append(el("td", { className: "num", text: formatNumber(row.z) }));
    tr.append(el("td", { className: "num", text: formatNumber(row.shifted) }));
    tr.append(el("td", { className: "num", text: formatNumber(row.exp) }));
    body.append(tr);
  }
  table.append(body);
  wrap.append(el("div", { className: "table-scroll" }, table));
  const total = el("p", { className: "inspector-formula", "data-role": "softmax-sum", "data-sum": String(sum) });
  total.textContent = `max z = ${formatPrecise(maxZ)}; Σ exp(z[j] − max z) = ${rows.map((r) => formatFactor(r.exp)).join(" + ")} = ${formatPrecise(sum)}`;
  wrap.append(total);
  const line = el("p", {
    className: `inspector-result ${match ? "match" : "mismatch"}`,
    "data-role": "inspector-softmax",
    "data-computed": String(computed),
    "data-engine": String(engine),
    "data-match": String(match),
  });
  line.append(
    el("span", { text: `${label} = ${formatPrecise(rows[k].exp)} / ${formatPrecise(sum)} = ` }),
    el("strong", { text: formatPrecise(computed) }),
    el("span", { text: ` · engine's ${label} = ` }),
    el("strong", { text: formatPrecise(engine) }),
    el("span", { className: "verdict", text: match ? " ✓ matches" : " ✗ differs" }),
  );
  wrap.append(line);
  return wrap;
}

function renderValues(values) {
  const list = el("dl", { className: "inspector-values" });
  for (const item of values) {
    list.append(el("dt", { text: item.label }), el("dd", { "data-value": String(item.value), text: formatPrecise(item.value) }));
  }
  return list;
}
