// Number formatting shared by the readouts, the inspector and the charts.

// Four significant digits, exponent notation for very small or large magnitudes.
export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e-3 && magnitude < 1e5) return String(Number(value.toPrecision(4)));
  return scientific(value, 3);
}

// Float32 carries about 7 significant digits; the inspector compares sums at 6.
export function formatPrecise(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e-4 && magnitude < 1e6) return String(Number(value.toPrecision(6)));
  return scientific(value, 5);
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
  return scientific(value, 1);
}

const SUPERSCRIPTS = { "-": "⁻", 0: "⁰", 1: "¹", 2: "²", 3: "³", 4: "⁴", 5: "⁵", 6: "⁶", 7: "⁷", 8: "⁸", 9: "⁹" };

// 4.952e-4 as "4.952 × 10⁻⁴", as written by hand (trailing zeros of the mantissa dropped).
export function scientific(value, digits) {
  const [mantissa, exponent] = value.toExponential(digits).split("e");
  const power = String(Number(exponent)).replace(/[-0-9]/g, (c) => SUPERSCRIPTS[c]);
  return `${Number(mantissa)} × 10${power}`;
}
