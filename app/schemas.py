"""Request and response bodies. Requests are strict (no "32" for 32, no unknown keys) and bounded
by ``Settings``; responses are rendered by orjson straight from NumPy, and the models below only
document them in the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from engine.optim import MIN_ADAM_EPS

from app.datasets import MNIST_SIDE
from app.settings import get_settings

_settings = get_settings()

MAX_SEED = 2**32 - 1
# Dataset indices beyond any split; bounded so a huge number is refused, not overflowed in NumPy.
MAX_DATASET_INDEX = 2**31 - 1
OptimizerName = Literal["sgd", "momentum", "adam"]
Split = Literal["train", "test"]


def _whole_number(value: Any) -> Any:
    """JSON Schema's "integer" includes 125.0; so does this API. Any other float stays a float
    and is refused by the strict int check."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An int field of a request: a JSON integer, or a number with no fractional part.
WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
Digit = Annotated[int, Field(ge=0, le=9), BeforeValidator(_whole_number)]
Position = Annotated[int, Field(ge=0), BeforeValidator(_whole_number)]  # an index along an axis
DatasetIndex = Annotated[int, Field(ge=0, le=MAX_DATASET_INDEX), BeforeValidator(_whole_number)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# The rules below are written into the OpenAPI document as well, so that a client (or a
# schema-driven fuzzer) sees what the server accepts: "null" is not a value of the optional
# fields (leave them out instead), a session comes from exactly one of a preset and a spec, and
# momentum/beta1/beta2/eps go only with the optimizer that uses them.
ONE_OF_PRESET_OR_SPEC = {"oneOf": [
    {"required": ["preset"], "not": {"required": ["spec"]}},
    {"required": ["spec"], "not": {"required": ["preset"]}},
]}
HYPERPARAMETERS = {"momentum": ("momentum",), "adam": ("beta1", "beta2", "eps")}


def _only_for(optimizer: str, names: tuple[str, ...]) -> dict[str, Any]:
    return {"if": {"not": {"required": ["optimizer"],
                           "properties": {"optimizer": {"const": optimizer}}}},
            "then": {"properties": {name: False for name in names}}}


HYPERPARAMETERS_FIT_OPTIMIZER = {"allOf": [_only_for(optimizer, names)
                                           for optimizer, names in HYPERPARAMETERS.items()]}


class CreateSessionRequest(StrictModel):
    """Either a preset name (with an optional seed) or a full spec."""

    model_config = ConfigDict(json_schema_extra=ONE_OF_PRESET_OR_SPEC)

    preset: str = Field(None, examples=["lenet5"])
    spec: dict[str, Any] = None
    seed: WholeNumber = Field(None, ge=0, le=MAX_SEED, description="overrides the spec's seed")
    positive_class: Digit = Field(
        None, description="for a network with one output: the digit whose target is 1")

    @model_validator(mode="after")
    def _preset_or_spec(self) -> "CreateSessionRequest":
        if (self.preset is None) == (self.spec is None):
            raise ValueError("give exactly one of 'preset' or 'spec'")
        return self


class SpecCheckRequest(StrictModel):
    spec: dict[str, Any] = Field(description="a network spec, as for POST /api/sessions")


class DatasetInput(StrictModel):
    dataset: Literal["mnist"]
    index: WholeNumber = Field(ge=0, description="index within the split")
    split: Split = "train"


GreyLevel = Annotated[float, Field(ge=0, le=1)]
PixelRow = Annotated[list[GreyLevel], Field(min_length=MNIST_SIDE, max_length=MNIST_SIDE)]


class PixelsInput(StrictModel):
    pixels: list[PixelRow] = Field(
        min_length=MNIST_SIDE, max_length=MNIST_SIDE,
        description=f"{MNIST_SIDE}x{MNIST_SIDE} grey levels in [0, 1], light digit on dark")

    @field_validator("pixels", mode="before")
    @classmethod
    def _digit_image_shape(cls, rows: Any) -> Any:
        """The shape first, in one error: a wrong shape (a flat list of a million numbers)
        must not be checked, and reported, element by element."""
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise ValueError(f"pixels must be {MNIST_SIDE} rows, each a list of {MNIST_SIDE} "
                             "numbers")
        if len(rows) != MNIST_SIDE or any(len(row) != MNIST_SIDE for row in rows):
            widths = sorted({len(row) for row in rows})
            shown = ", ".join(map(str, widths[:5])) + (", ..." if len(widths) > 5 else "")
            raise ValueError(f"pixels must be {MNIST_SIDE}x{MNIST_SIDE}; got {len(rows)} rows "
                             f"of length {shown or 0}")
        values = [value for row in rows for value in row]
        if not all(isinstance(value, (int, float)) and not isinstance(value, bool)
                   for value in values):
            raise ValueError("pixels must be numbers")
        image = np.asarray(values, dtype=np.float64)
        if not np.isfinite(image).all():
            raise ValueError("pixels must be finite numbers (no NaN or infinity)")
        if image.min() < 0 or image.max() > 1:
            raise ValueError(f"pixels must lie in [0, 1]; got values from {image.min()} "
                             f"to {image.max()}")
        return rows

    @field_validator("pixels", mode="after")
    @classmethod
    def _digit_image(cls, rows: list[list[float]]) -> Any:
        return np.asarray(rows, dtype=np.float32)


SampleInput = DatasetInput | PixelsInput


class ExampleInput(StrictModel):
    example: str = Field(max_length=64, description="an example of the session's preset (GET "
                                                    "/api/presets lists them), with its own target")


SampleOrExample = SampleInput | ExampleInput


class _InputWithLabel(StrictModel):
    input: SampleInput | None = None
    label: Digit | None = Field(None, description="required with pixels; with a dataset sample it "
                                                  "replaces the sample's own label (a what-if)")

    @model_validator(mode="after")
    def _label_matches_input(self) -> "_InputWithLabel":
        if isinstance(self.input, PixelsInput) and self.label is None:
            raise ValueError("pixels need a 'label' (the digit they show)")
        if self.input is None and self.label is not None:
            raise ValueError("'label' goes with an 'input'")
        if isinstance(self.input, ExampleInput) and self.label is not None:
            raise ValueError("an example brings its own target; 'label' does not apply to it")
        return self


MAX_EDITS = 1024


class WeightEdit(StrictModel):
    """One weight or bias set to a value for a what-if trace (the session keeps its own)."""

    layer: Position = Field(description="index of a conv or dense layer")
    param: Literal["W", "b"]
    index: list[Position] = Field(
        min_length=1, max_length=4, description="one index per axis: W (F, C, HH, WW) or "
                                                "(units, inputs), b (F,) or (units,)")
    value: float = Field(allow_inf_nan=False, description="rounded to the network's dtype")


Edits = Annotated[list[WeightEdit], Field(max_length=MAX_EDITS)]


class _WhatIf(_InputWithLabel):
    input: SampleOrExample
    edits: Edits = Field(None, description=f"at most {MAX_EDITS} weight edits; the last edit of "
                                           "a cell wins")

    def edit_list(self) -> list[dict[str, Any]] | None:
        return None if self.edits is None else [edit.model_dump() for edit in self.edits]


class TraceRequest(_WhatIf):
    """A trace of one sample; ``label`` and ``edits`` make it a what-if."""


class ParameterCell(StrictModel):
    layer: Position
    param: Literal["W", "b"]
    index: list[Position] = Field(min_length=1, max_length=4)


class InputCell(StrictModel):
    input: list[Position] = Field(
        min_length=3, max_length=3, description="(channel, row, column) of the network's input")


class GradcheckRequest(_WhatIf):
    of: ParameterCell | InputCell
    epsilon: float = Field(1e-5, ge=1e-7, le=1e-2, allow_inf_nan=False)

    def target(self) -> dict[str, Any]:
        return self.of.model_dump()


class TrainingOptions(StrictModel):
    model_config = ConfigDict(json_schema_extra=HYPERPARAMETERS_FIT_OPTIMIZER)

    batch_size: WholeNumber = Field(32, ge=1, le=_settings.max_batch_size)
    learning_rate: float = Field(0.05, gt=0, le=_settings.max_learning_rate, allow_inf_nan=False)
    optimizer: OptimizerName = "sgd"
    momentum: float = Field(None, ge=0, lt=1, description="momentum optimizer only")
    beta1: float = Field(None, ge=0, lt=1, description="adam only")
    beta2: float = Field(None, ge=0, lt=1, description="adam only")
    eps: float = Field(None, ge=MIN_ADAM_EPS, le=1, description="adam only")

    @model_validator(mode="after")
    def _hyperparameters_fit_optimizer(self) -> "TrainingOptions":
        allowed = {"sgd": set(), "momentum": {"momentum"}, "adam": {"beta1", "beta2", "eps"}}
        given = {name for name in ("momentum", "beta1", "beta2", "eps")
                 if getattr(self, name) is not None}
        stray = given - allowed[self.optimizer]
        if stray:
            raise ValueError(f"{', '.join(sorted(stray))} do not apply to optimizer "
                             f"{self.optimizer!r}")
        return self

    def hyperparameters(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in ("momentum", "beta1", "beta2", "eps")
                if getattr(self, name) is not None}


class StepRequest(TrainingOptions, _InputWithLabel):
    """One iteration; an optional ``input`` (a digit, or a preset's example) becomes the batch's
    first sample."""

    input: SampleOrExample | None = None


class TrainRequest(TrainingOptions):
    steps: WholeNumber = Field(50, ge=1, le=_settings.max_train_steps)

    @model_validator(mode="after")
    def _bounded_work(self) -> "TrainRequest":
        samples = self.steps * self.batch_size
        if samples > _settings.max_train_samples:
            raise ValueError(f"steps x batch_size = {samples:,} samples is more than one "
                             f"request may train on ({_settings.max_train_samples:,}); split "
                             "it into several requests")
        return self


class EvaluateRequest(StrictModel):
    limit: WholeNumber = Field(_settings.max_eval_samples, ge=1, le=_settings.max_eval_samples,
                       description="how many test-split samples to score")
    exclude: list[DatasetIndex] = Field(
        default_factory=list, max_length=10_000,
        description="test-split indices left out of the score: digits the user trained on "
                    "(Step puts the chosen input in every batch), which are no longer held out")


# --- responses (documentation only) -----------------------------------------------------------

class Health(BaseModel):
    status: Literal["ok"]


class ExampleOut(BaseModel):
    name: str
    description: str
    input: list[Any]
    target: list[float]


class PresetOut(BaseModel):
    name: str
    description: str
    spec: dict[str, Any]
    positive_class: int | None
    initial_params: list[dict[str, list[Any]]] | None
    examples: list[ExampleOut]


class SessionOut(BaseModel):
    id: str
    spec: dict[str, Any]
    step: int
    preset: str | None
    positive_class: int | None
    target_rule: str
    optimizer: str | None
    learning_rate: float | None
    cursor: int
    created_at: float
    last_used: float


def _drop_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _unless_left_out(kind: Any, field: str) -> Any:
    """A key the answer has unless ``?fields=`` leaves ``field`` out (then the key is absent,
    never null): documented as not required, with the type it has when present."""
    return Annotated[kind | SkipJsonSchema[None], Field(
        None, description=f"absent when ?fields= leaves out {field!r}",
        json_schema_extra=_drop_default)]


class LayerOut(BaseModel):
    index: int
    name: str
    type: str
    spec: dict[str, Any]
    input_shape: list[int]
    output_shape: list[int]
    z: _unless_left_out(list[Any], "z")
    a: _unless_left_out(list[Any], "a")
    delta: _unless_left_out(list[Any], "delta")
    grad_a: Annotated[list[Any] | None, Field(
        None, description="null on a softmax/sigmoid output fused with its loss; absent when "
                          "?fields= leaves out 'grad_a'", json_schema_extra=_drop_default)]
    grads: _unless_left_out(dict[str, list[Any]], "grads")
    params: _unless_left_out(dict[str, list[Any]], "params")
    argmax: _unless_left_out(list[Any], "argmax")


class TraceOut(BaseModel):
    loss: float
    label: int | None = Field(description="null for a preset's example (it has a target, "
                                          "not a digit)")
    target: int | list[float]
    prediction: list[float]
    predicted_class: int | None
    source: dict[str, Any]
    input: list[Any]
    input_grad: list[Any]
    layers: list[LayerOut]
    edits: list[dict[str, Any]] | None = None


class KinkOut(BaseModel):
    layer: int
    name: str
    kind: Literal["relu", "leaky_relu", "maxpool"]
    count: int
    index: list[int]
    explanation: str
    z_plus: float | None = None
    z_minus: float | None = None
    winner_plus: int | None = None
    winner_minus: int | None = None


class GradcheckOut(BaseModel):
    of: dict[str, Any]
    analytic: float
    numeric: float
    abs_error: float
    rel_error: float
    epsilon: float
    loss: float
    loss_plus: float
    loss_minus: float
    value: float
    dtype: str
    kink: KinkOut | None
    kinks: list[KinkOut]
    label: int | None
    source: dict[str, Any]


class BatchOut(BaseModel):
    """Per sample of the mini-batch, in batch order, before the update."""

    indices: list[int | None] = Field(
        description="train-split indices; null for a given input (a drawing, an upload), "
                    "which is sample 0")
    labels: list[int | None] = Field(description="each sample's digit; null for a preset's "
                                                 "example (it has a target, not a digit)")
    losses: list[float | None] = Field(description="each sample's own loss (their mean is "
                                                   "'loss')")
    predicted: list[int] = Field(description="each sample's predicted class (0/1 for a net "
                                             "with one output)")


class StepOut(BaseModel):
    step: int
    loss: float
    loss_after: float
    batch_accuracy: float
    batch_size: int
    batch_indices: list[int | None]
    batch: BatchOut
    optimizer: str
    learning_rate: float
    trace: TraceOut
    params_before: _unless_left_out(list[dict[str, list[Any]]], "params")
    params_after: _unless_left_out(list[dict[str, list[Any]]], "params")
    batch_grads: _unless_left_out(list[dict[str, list[Any]]], "grads")


class HistoryOut(BaseModel):
    step: int
    steps: list[int]
    loss: list[float]
    accuracy: list[float]
    evaluations: list[dict[str, Any]]


class TrainOut(BaseModel):
    step: int
    steps_run: int
    loss: float
    accuracy: float
    optimizer: str
    learning_rate: float
    batch_size: int
    history: HistoryOut


class MisclassifiedOut(BaseModel):
    index: int = Field(description="index in the MNIST test split")
    label: int = Field(description="the digit")
    true_class: int = Field(description="the class the network should predict (the digit, or "
                                        "1/0 for a single output: is it the positive digit?)")
    predicted: int
    probability: float = Field(description="the network's output for the predicted class")


class EvaluationOut(BaseModel):
    step: int
    split: Literal["test"]
    samples: int
    accuracy: float
    loss: float
    classes: int = Field(description="K: the confusion matrix is K x K")
    confusion: list[list[int]] = Field(description="counts; row: true class, column: predicted")
    misclassified_count: int
    misclassified: list[MisclassifiedOut] = Field(
        description="the first misclassified samples in test-split order (at most 100)")


class MnistItem(BaseModel):
    index: int
    label: int
    pixels: list[list[float]] | None = None


class MnistPage(BaseModel):
    split: Split
    total: int
    offset: int
    items: list[MnistItem]


class MnistSample(BaseModel):
    index: int
    label: int
    split: Split
    pixels: list[list[float]]


class PixelsOut(BaseModel):
    pixels: list[list[float]]


class SpecLayerOut(BaseModel):
    index: int
    name: str
    type: str
    input_shape: list[int]
    output_shape: list[int]
    parameters: int = Field(description="weights and biases of this layer")


class SpecCheckOut(BaseModel):
    spec: dict[str, Any] = Field(description="the spec normalized (every default filled in)")
    layers: list[SpecLayerOut]
    parameters: int
    output_size: int


class SpecErrorOut(BaseModel):
    detail: str
    layer: int | None = Field(description="the index of the layer the problem is in, or null "
                                          "for a problem of the whole spec")


class ErrorOut(BaseModel):
    detail: Any
