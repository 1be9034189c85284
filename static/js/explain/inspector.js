// Renders the arithmetic of a clicked cell (from arithmetic.js) as HTML: the formula
// with its first terms, the receptive field and kernel side by side, the table of terms,
// and the sum next to the engine's value.

import { INSPECTOR_MAX_ROWS, INSPECTOR_PREVIEW_TERMS, INSPECTOR_FIRST_ROWS, GRID_TEXT_MAX_SIDE } from "../config.js";
import { PICTURES_SHOWN } from "./backward.js";
import { formatNumber, formatPrecise, formatFactor, formatShort } from "../format.js";
import { el } from "../dom.js";

export function renderInspector(container, title, sections) {
  const body = el("div", { className: "inspector-body" });
  for (const section of sections) body.append(renderSection(section));
  container.querySelector('[data-role="inspector-title"]').textContent = title;
  const slot = container.querySelector('[data-role="inspector-content"]');
  slot.replaceChildren(body);
}

function renderSection(section) {
  const node = el("section", { className: "inspector-section" });
  if (section.reading) node.dataset.reading = section.reading;
  node.append(el("h3", { text: section.heading }));
  if (section.explanation) node.append(el("p", { className: "inspector-explanation", text: section.explanation }));
  if (section.batch) node.append(renderBatch(section.batch, section.result));
  if (section.pictures) node.append(renderPictures(section.pictures));
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
// A long sum previews its largest non-zero terms (never a run of zeros) and says how many
// terms there are and how many are exactly 0; a short one is written out in order.
function renderFormula(section) {
  const term = (r) => (r.bv === null || r.bv === undefined ? formatFactor(r.av) : `${formatFactor(r.av)}·${formatFactor(r.bv)}`);
  const rows = section.rows;
  let inner;
  if (rows.length <= INSPECTOR_PREVIEW_TERMS) {
    inner = rows.map(term).join(" + ");
  } else {
    const nonZero = rows.filter((r) => r.product !== 0).sort((p, q) => Math.abs(q.product) - Math.abs(p.product));
    const zeros = rows.length - nonZero.length;
    const shown = nonZero.slice(0, INSPECTOR_PREVIEW_TERMS).map(term);
    const rest = nonZero.length - shown.length;
    const counts = `${rows.length} terms${zeros ? `, ${zeros} of them 0` : ""}`;
    inner = shown.length ? `${shown.join(" + ")}${rest ? ` + … (${rest} smaller)` : ""}` : "0";
    inner += ` [${counts}${shown.length ? "; largest first" : ""}]`;
  }
  let text = `${section.result.label} = ${inner}`;
  if (section.bias) text += ` + ${formatFactor(section.bias.value)}`;
  if (section.divisor) text = `${section.result.label} = (${inner}) / ${section.divisor}`;
  text += ` = ${formatPrecise(section.result.computed)}`;
  return el("p", { className: "inspector-formula", "data-role": "inspector-formula", text });
}

// The gradient the update applied (the mini-batch mean) above the traced sample's own,
// which the rest of the section derives.
function renderBatch(batch, result) {
  const node = el("p", { className: "inspector-batch", "data-role": "batch-gradient", "data-value": String(batch.value) });
  node.append(
    el("span", { text: `Applied by the update: the mini-batch mean ${batch.label} = ` }),
    el("strong", { text: formatPrecise(batch.value) }),
    el("span", { text: ` (over ${batch.count} samples). Below: this traced sample's own ${batch.label} = ${formatPrecise(result.engine)}, one of the ${batch.count} terms of that mean.` }),
  );
  return node;
}

// A signed value as a tint: red for positive, blue for negative, stronger when larger.
function tint(value, maxAbs) {
  if (!maxAbs || !value) return "";
  const alpha = (0.08 + 0.5 * Math.min(1, Math.abs(value) / maxAbs)).toFixed(2);
  return value > 0 ? `rgba(214, 72, 52, ${alpha})` : `rgba(52, 98, 200, ${alpha})`;
}

function renderGrid(grid) {
  const rows = grid.cells.length;
  const cols = grid.cells[0].length;
  const withText = rows <= GRID_TEXT_MAX_SIDE && cols <= GRID_TEXT_MAX_SIDE;
  let maxAbs = 0;
  for (const line of grid.cells) for (const c of line) maxAbs = Math.max(maxAbs, Math.abs(c.v));
  const table = el("table", { className: `mini-grid bw-grid${withText ? "" : " compact"}`, "data-role": grid.role, "aria-label": grid.caption });
  // A large grid is drawn about 110 px wide, so three of them fit side by side.
  if (!withText) table.style.setProperty("--cell", `${Math.max(3, Math.min(9, Math.floor(110 / Math.max(rows, cols))))}px`);
  for (const line of grid.cells) {
    const tr = el("tr");
    for (const c of line) {
      const td = el("td", { className: c.kind, "data-value": String(c.v), title: `${c.title ? `${c.title} = ` : ""}${formatNumber(c.v)}` });
      const background = tint(c.v, maxAbs);
      if (background) td.style.background = background;
      if (withText) td.textContent = c.kind === "dil" ? "·" : formatShort(c.v);
      tr.append(td);
    }
    table.append(tr);
  }
  return el("figure", { className: "bw-figure" }, table, el("figcaption", { text: grid.caption }));
}

function renderPicture(picture) {
  const node = el("div", { className: "bw-picture", "data-role": "bw-picture" });
  if (picture.caption) node.append(el("p", { className: "bw-caption", text: picture.caption }));
  const row = el("div", { className: "bw-row" });
  for (const item of picture.items) row.append(typeof item === "string" ? el("span", { className: "patch-times", text: item }) : renderGrid(item));
  node.append(row);
  if (picture.sum) {
    node.append(el("p", { className: "bw-sum", "data-role": "bw-sum", "data-value": String(picture.sum.value), text: `${picture.sum.label} = ${formatPrecise(picture.sum.value)}` }));
  }
  return node;
}

function renderPictures(pictures) {
  const wrap = el("div", { className: "bw-pictures", "data-role": "bw-pictures" });
  if (pictures.intro) wrap.append(el("p", { className: "inspector-explanation", text: pictures.intro }));
  const shown = pictures.shown.slice(0, PICTURES_SHOWN);
  const folded = pictures.shown.slice(PICTURES_SHOWN);
  for (const picture of shown) wrap.append(renderPicture(picture));
  if (folded.length) {
    const details = el("details", { className: "bw-more" });
    details.append(el("summary", { text: `${folded.length} more, smaller (in the total too)` }));
    for (const picture of folded) details.append(renderPicture(picture));
    wrap.append(details);
  }
  if (pictures.more > 0) wrap.append(el("p", { className: "inspector-explanation", text: `… and ${pictures.more} more (every one is in the sum and the table).` }));
  if (pictures.total !== undefined && pictures.shown.length > 1) {
    wrap.append(el("p", { className: "bw-sum", "data-role": "bw-total", "data-value": String(pictures.total), text: `Σ over all ${pictures.shown.length} = ${formatPrecise(pictures.total)}` }));
  }
  return wrap;
}

function renderPatch(patch) {
  const wrap = el("div", { className: "patch-grid" });
  const channels = Math.min(patch.channels, 8);
  for (let c = 0; c < channels; c++) {
    const pair = el("div", { className: "patch-pair" });
    const xTable = el("table", { className: "mini-grid", "aria-label": `receptive field, channel ${c}` });
    const wTable = el("table", { className: "mini-grid kernel", "aria-label": `kernel, channel ${c}` });
    const { x, k } = patch.grids[c];
    for (let r = 0; r < x.length; r++) {
      const xRow = el("tr");
      const wRow = el("tr");
      for (let s = 0; s < x[r].length; s++) {
        xRow.append(el("td", { className: x[r][s].kind, title: x[r][s].title, text: formatShort(x[r][s].v) }));
        wRow.append(el("td", { title: k[r][s].title, text: formatShort(k[r][s].v) }));
      }
      xTable.append(xRow);
      wTable.append(wRow);
    }
    pair.append(el("figure", {}, xTable, el("figcaption", { text: `x, channel ${c}` })));
    pair.append(el("span", { className: "patch-times", text: "⊙" }));
    pair.append(el("figure", {}, wTable, el("figcaption", { text: patch.rotated ? `W[${patch.f}, ${c}] rotated 180°` : `W[${patch.f}, ${c}]` })));
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

// The terms as a table: the non-zero ones, largest first, with the count of zeros stated;
// a long list shows its first rows and the rest on request.
function renderTerms(section) {
  const rows = section.rows;
  const details = el("details", { className: "inspector-terms" });
  const listed = rows.filter((r) => r.product !== 0).sort((p, q) => Math.abs(q.product) - Math.abs(p.product));
  const zeros = rows.length - listed.length;
  const summary =
    listed.length === 0
      ? `${rows.length} term${rows.length === 1 ? "" : "s"}, ${rows.length === 1 ? "exactly 0" : "all exactly 0"}`
      : `${rows.length} term${rows.length === 1 ? "" : "s"}` +
        (rows.length > 1 ? ` — ${listed.length} non-zero, largest first` : "") +
        (zeros ? `; ${zeros} ${zeros === 1 ? "is" : "are"} exactly 0 and not listed` : "");
  details.append(el("summary", { text: summary }));
  if (listed.length === 0) return details;
  if (rows.length <= 30) details.open = true;
  const table = el("table", { className: "terms-table", "data-role": "terms-table" });
  // Three columns (each factor's name above its value, then the product) so the product
  // stays in view in the docked inspector.
  const columns = section.columns || ["a", "value", "b", "value", "product"];
  const head = el("tr");
  for (const name of [columns[0], columns[2], columns[4]]) head.append(el("th", { scope: "col", text: name }));
  table.append(el("thead", {}, head));
  const bodyRows = el("tbody");
  const factor = (name, value) =>
    value === null || value === undefined
      ? el("td", { text: name || "" })
      : el("td", { className: "factor", title: `${name} = ${value}` }, el("span", { className: "term-name", text: name }), el("span", { className: "num", text: formatShort(value) }));
  const fill = (count) => {
    bodyRows.replaceChildren();
    for (const row of listed.slice(0, count)) {
      const tr = el("tr");
      tr.append(factor(row.a, row.av), factor(row.b, row.bv));
      tr.append(el("td", { className: "num", text: formatNumber(row.product) }));
      bodyRows.append(tr);
    }
  };
  fill(INSPECTOR_FIRST_ROWS);
  table.append(bodyRows);
  details.append(el("div", { className: "table-scroll" }, table));
  if (listed.length > INSPECTOR_FIRST_ROWS) {
    const all = Math.min(listed.length, INSPECTOR_MAX_ROWS);
    const more = el("button", { type: "button", className: "terms-more", text: `Show ${all === listed.length ? "all" : `the first ${all} of`} ${listed.length} non-zero terms` });
    const note = el("p", { className: "inspector-explanation", text: `The ${INSPECTOR_FIRST_ROWS} largest of ${listed.length} non-zero terms; the sum uses all of them.` });
    more.addEventListener("click", () => {
      fill(all);
      note.textContent = all < listed.length ? `The ${all} largest of ${listed.length} non-zero terms; the sum uses all of them.` : `All ${listed.length} non-zero terms, largest first.`;
      more.remove();
    });
    details.append(note, more);
  }
  return details;
}

function renderResult(section) {
  const { label, computed, engine, match } = section.result;
  const what = section.divisor ? "sum / " + section.divisor : section.bias ? `Σ products + ${section.bias.label}` : section.rows ? "Σ terms" : "value";
  const node = resultLine("inspector-result", computed, engine, match);
  node.append(el("span", { text: `${what} = ` }), el("strong", { "data-role": "computed", text: formatPrecise(computed) }));
  node.append(el("span", { text: ` · engine's ${label} = ` }), el("strong", { "data-role": "engine", text: formatPrecise(engine) }));
  node.append(el("span", { className: "verdict", text: match ? " ✓ matches" : " ✗ differs" }));
  return node;
}

// The line comparing the page's value with the engine's: its numbers in data attributes for
// the tests, green or red by whether they match.
function resultLine(role, computed, engine, match) {
  return el("p", {
    className: `inspector-result ${match ? "match" : "mismatch"}`,
    "data-role": role,
    "data-computed": String(computed),
    "data-engine": String(engine),
    "data-match": String(match),
  });
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
  const line = resultLine("inspector-softmax", computed, engine, match);
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
