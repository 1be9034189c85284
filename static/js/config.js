// Visual and behavioural constants of the page, kept in one place.

export const API_BASE = "/api";

// A request slower than this shows the busy indicator.
export const BUSY_DELAY_MS = 200;

// Colour scales. Signed quantities use a diverging scale centred at zero, activations a
// sequential one; both read well on white and stay distinguishable in greyscale.
export const DIVERGING_SCALE = [
  [0.0, "#2b59c3"],
  [0.25, "#8fb3ef"],
  [0.5, "#f7f7f7"],
  [0.75, "#f2a07b"],
  [1.0, "#b8261f"],
];
export const SEQUENTIAL_SCALE = [
  [0.0, "#0d0a29"],
  [0.2, "#3b0f70"],
  [0.45, "#8c2981"],
  [0.7, "#de4968"],
  [0.88, "#fe9f6d"],
  [1.0, "#fcfdbf"],
];
// The confusion matrix: a row's share, white (none) to the accent blue (all of the row).
export const CONFUSION_SCALE = [
  [0.0, "#f7f9fd"],
  [0.15, "#c9d7f3"],
  [1.0, "#2b59c3"],
];
export const GREY_SCALE = [
  [0, "#000000"],
  [1, "#ffffff"],
];

// What the strip can show for every layer. "signed" picks the diverging scale.
export const VIEWS = [
  { key: "a", label: "activation a", short: "a", signed: false, key_hint: "1" },
  { key: "z", label: "pre-activation z", short: "z", signed: true, key_hint: "2" },
  { key: "delta", label: "delta dL/dz", short: "δ", signed: true, key_hint: "3" },
  { key: "W", label: "weights W", short: "W", signed: true, key_hint: "4" },
  { key: "dW", label: "weight gradient dL/dW", short: "dW", signed: true, key_hint: "5" },
  { key: "db", label: "bias gradient dL/db", short: "db", signed: true, key_hint: "6" },
];

// Views used by the update phases of the animation (never picked by hand).
export const UPDATE_VIEWS = {
  "W-before": { label: "weights before the update", signed: true },
  "W-change": { label: "the update applied (after − before)", signed: true },
  "W-after": { label: "weights after the update", signed: true },
};

// Heatmap geometry. A feature map is drawn at about MAP_PX pixels on its long side,
// cells never smaller than MIN_CELL_PX nor larger than MAX_CELL_PX.
export const MAP_PX = 56;
export const INPUT_MAP_PX = 112;
export const MAP_PX_FEW = 150; // when a layer has at most FEW_MAPS maps
export const FEW_MAPS = 2;
export const MIN_CELL_PX = 2;
export const MAX_CELL_PX = 40;
export const MAX_FIGURE_HEIGHT_PX = 300;
export const VECTOR_COLUMN_PX = 22; // width of a dense layer's column heatmap
// A vector never gets rows thinner than this (a unit must stay clickable): a longer one wraps
// into side-by-side columns this wide.
export const MIN_VECTOR_ROW_PX = 8;
export const VECTOR_WRAPPED_COLUMN_PX = 14;
export const MATRIX_WIDTH_PX = 150; // width of a dense weight matrix heatmap
// Every heatmap has its colour bar under it, drawn in HTML (a Plotly colour bar costs about
// as much as the heatmap itself); at least this wide so its three labels fit.
export const COLORBAR_MIN_PX = 72;
// Maps are sized for a strip at least this wide; a narrower one (beside the docked
// inspector) scrolls sideways rather than shrinking them.
export const STRIP_MIN_WIDTH_PX = 560;
export const FIGURE_MARGIN = { l: 2, r: 2, t: 2, b: 2 };
export const GUTTER_CELLS = 1; // empty cells between tiled maps
// A card whose layer the animation has not reached yet shows its maps this faintly.
export const PENDING_MAP_OPACITY = 0.05;

// Numbers are printed in cells when a map is this small (the tiny worked example).
export const CELL_TEXT_MAX_CELLS = 64;
// wide enough for "-0.30" in the strip's 11 px digits
export const CELL_TEXT_MIN_PX = 36;

// Animation: milliseconds per phase for each speed setting. "live" does not animate: Play
// trains step after step and draws every step's result, fetching only what the view shows.
// At "normal" one iteration of LeNet-5 (23 phases) takes about 2.1 s plus the request and the drawing.
export const SPEEDS = [
  { label: "live", ms: 0 },
  { label: "fast", ms: 45 },
  { label: "normal", ms: 90 },
  { label: "slow", ms: 350 },
  { label: "very slow", ms: 900 },
];
export const DEFAULT_SPEED_INDEX = 2;
// While live training runs, the prediction and curves are redrawn at most this often (5 Hz);
// the strip's maps are drawn for every step ...
export const LIVE_CHARTS_MS = 200;
// ... and the saliency (not asked for live) once a second.
export const LIVE_SALIENCY_MS = 1000;

// MNIST browser page size and drawing canvas.
export const MNIST_PAGE_SIZE = 24;
export const DRAW_BRUSH_PX = 20;
// An upload whose preprocessed 28×28 has more than this share of pixels above this grey level
// is warned about (MNIST's training digits: 17% on average, 37% at most), and one whose ink
// fills more than this share of its bounding box (MNIST: 44% typical, 84% at most, boxes of at
// least 8×8).
export const DIGIT_INK_LEVEL = 0.1;
export const DIGIT_MAX_INKED_SHARE = 0.45;
export const DIGIT_MAX_BOX_FILL = 0.9;

// Train steps runs a long run as requests of at most this many steps (the server caps one
// request's steps and work; the curves and the progress bar move after each request).
export const TRAIN_CHUNK_STEPS = 25;

export const DEFAULTS = {
  preset: "lenet5",
  seed: 0,
  optimizer: "sgd",
  learning_rate: 0.05,
  batch_size: 32,
  train_steps: 50,
  learning_rate_for: { sgd: 0.05, momentum: 0.02, adam: 0.001 },
};

// A learning rate above these is unusually high for the optimizer: the page warns before a
// step (the loss tends to explode; the server refuses a step whose numbers overflow).
export const HIGH_LEARNING_RATE = { sgd: 1, momentum: 0.5, adam: 0.02 };

export const OPTIMIZERS = [
  { key: "sgd", label: "SGD" },
  { key: "momentum", label: "Momentum" },
  { key: "adam", label: "Adam" },
];

// Inspector tables list at most this many terms; the sum always uses every term.
export const INSPECTOR_MAX_ROWS = 400;
export const INSPECTOR_PREVIEW_TERMS = 4;

// Colours for charts (not scales).
export const COLORS = {
  accent: "#3153b5",
  label: "#1b8a4b",
  wrong: "#c0392b",
  neutral: "#8a93a6",
  loss: "#b8261f",
  lossAfter: "#f2a07b",
  accuracy: "#1b8a4b",
  evalAccuracy: "#3153b5",
  winner: "#00c2a8",
  selected: "#ffd400",
};

// --- the inspector's backward pictures and what-if (issue 9) ---
// A term table first lists this many of its largest terms; the rest on request.
export const INSPECTOR_FIRST_ROWS = 12;
// An inspector grid prints its numbers when neither side is longer than this; a larger
// one (a 28×28 input plane) is drawn as tinted cells, each value in its tooltip.
export const GRID_TEXT_MAX_SIDE = 7;
