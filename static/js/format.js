// Number formatting shared by the readouts, the inspector and the charts.

// Four significant digits, exponent notation for very small or large magnitudes.
export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e-3 && magnitude < 1e5) return String(Number(value.toPrecision(4)));
  return value.toExponential(3).replace("e", "·10^");
}

// Float32 carries about 7 significant digits; the inspector compares sums at 6.
export function formatPrecise(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e-4 && magnitude < 1e6) return String(Number(value.toPrecision(6)));
  return value.toExponential(5).replace("e", "·10^");
}

// A factor inside a product: negative numbers in parentheses, as written by hand.
export function formatFactor(value) {
  const text = formatNumber(value);
  return value < 0 ? `(${text})` : text;
}

// Three significant digits, for the small grids of the inspector.
export function formatShort(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e-3 && magnitude < 1e4) return String(Number(value.toPrecision(3)));
  return value.toExponential(1);
}
