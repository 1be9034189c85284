"""What the trace, step, train and evaluate routes do to a session, delegating all math to the
engine. Every function here is called with ``session.lock`` held, and either completes its
change or raises ``Refused`` with the session exactly as it was."""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import Optimizer, Trace, make_optimizer, optimizer_from_state

from app.datasets import (
    TargetRule,
    evaluation_pool,
    fit_to_input,
    split_arrays,
    split_size,
    training_pool,
)
from app.presets import PRESETS
from app.schemas import DatasetInput, ExampleInput, PixelsInput, SampleInput, TrainingOptions
from app.serialize import (
    LAYER_FIELDS,
    array_bytes,
    params_json,
    step_answer_with_fields,
    trace_json,
)
from app.sessions import KeptStep, Session, TracedInput

EVALUATION_CHUNK = 100
# The evaluation answer lists this many misclassified test digits at most (the page's gallery).
MISCLASSIFIED_CAP = 100


class Refused(Exception):
    """A request the session cannot carry out; nothing was changed."""

    def __init__(self, detail: str, status_code: int = 422) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status_code = status_code


@dataclass
class Sample:
    """A digit (``image`` and ``digit``), or a preset's example: ``x`` and ``target`` already as
    the network takes them, no digit."""

    image: np.ndarray | None  # (1, 28, 28) float32 in [0, 1]
    digit: int | None
    source: dict[str, Any]
    x: np.ndarray | None = None  # (C, H, W)
    target: np.ndarray | None = None  # (K,)


def target_rule(session: Session) -> TargetRule:
    return TargetRule.for_network(session.network, session.positive_class)


def _example_sample(session: Session, name: str) -> Sample:
    preset = PRESETS.get(session.preset or "")
    example = preset.example(name) if preset is not None else None
    if example is None:
        offered = ", ".join(repr(e.name) for e in preset.examples) if preset is not None else ""
        raise Refused(f"this session's network has no example {name!r}; "
                      + (f"its preset offers {offered}" if offered else
                         "examples come with presets that carry one (see the list of presets)"))
    x = np.asarray(example.input, dtype=session.network.dtype)
    if x.shape != session.network.input_shape:  # an imported session may name any preset
        raise Refused(f"example {name!r} is a {'x'.join(map(str, x.shape))} input, but this "
                      f"session's network takes "
                      f"{'x'.join(map(str, session.network.input_shape))}")
    return Sample(None, None, {"example": name, "preset": preset.name}, x=x,
                  target=np.asarray(example.target, dtype=np.float64))


def resolve_sample(session: Session, chosen: SampleInput | ExampleInput,
                   label: int | None) -> Sample:
    rule = target_rule(session)
    if isinstance(chosen, ExampleInput):
        return _example_sample(session, chosen.example)
    if isinstance(chosen, DatasetInput):
        size = split_size(chosen.split)
        if chosen.index >= size:
            raise Refused(f"index {chosen.index} is out of range: the MNIST {chosen.split} split "
                          f"has {size} samples (0..{size - 1})")
        images, labels = split_arrays(chosen.split)
        source = {"dataset": "mnist", "split": chosen.split, "index": chosen.index}
        digit = int(labels[chosen.index])
        if label is not None and label != digit:  # a what-if: the sample traced as another digit
            source["dataset_label"] = digit
            digit = label
        sample = Sample(images[chosen.index], digit, source)
    else:
        assert isinstance(chosen, PixelsInput) and label is not None
        sample = Sample(chosen.pixels[None], label, {"pixels": True})
    problem = rule.check_label(sample.digit)
    if problem:
        raise Refused(problem)
    return sample


def _network_input(session: Session, images: np.ndarray) -> np.ndarray:
    return fit_to_input(images, session.network.input_shape)


def _engine_trace(session: Session, x: np.ndarray, y: np.ndarray,
                  edits: list[dict[str, Any]] | None = None, training: bool = False) -> Trace:
    """The engine's trace; ``training`` for a training step's batch, of which only the loss, the
    outputs and the weights' gradients are read (no dL/dx, no intermediates kept)."""
    try:
        return session.network.trace(x, y, edits=edits, need_input_grad=not training,
                                     keep_intermediates=not training)
    except ValueError as exc:  # the engine's input, target and edit checks
        raise Refused(str(exc)) from exc


def _sample_arrays(session: Session, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one sample as the network takes them, with the batch axis."""
    if sample.x is not None:
        return sample.x[None], sample.target[None]
    return (_network_input(session, sample.image[None]),
            target_rule(session).targets(np.array([sample.digit])))


def _applied_edits(session: Session, edits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The edits with each value as the network holds it (rounded to its dtype, and written in
    JSON as the trace's arrays of that dtype are)."""
    dtype = session.network.dtype
    return [dict(edit, value=dtype.type(edit["value"])) for edit in edits]


def _refuse_non_finite(what: str, *values: Any) -> None:
    """Edited weights can be large enough to overflow the pass; say so rather than answer NaN."""
    if not all(np.isfinite(value).all() for value in values):
        raise Refused(f"with these edits the {what} is not finite (the values overflow the "
                      "network's dtype); try smaller values")


def trace_sample(session: Session, sample: Sample,
                 edits: list[dict[str, Any]] | None = None,
                 fields: frozenset[str] = frozenset(LAYER_FIELDS)) -> tuple[dict[str, Any], bool]:
    """The trace answer of one sample, with the per-layer arrays named in ``fields``; with
    ``edits`` as if those weights had those values (the session's weights are not touched: the
    engine edits copies). Also whether the sample became the session's last input (every trace
    but a what-if), which the store then records."""
    x, y = _sample_arrays(session, sample)
    with np.errstate(over="ignore", invalid="ignore"):  # checked just below
        trace = _engine_trace(session, x, y, edits=edits)
    if edits:
        _refuse_non_finite("trace", trace.loss, trace.input_grad,
                           *(grad for record in trace.layers for grad in record.grads.values()))
    answer = trace_json(trace, session.network, target_rule(session), label=sample.digit,
                        source=sample.source, fields=fields,
                        target=None if sample.target is None else sample.target.tolist())
    if edits is not None:
        answer["edits"] = _applied_edits(session, edits)
    if edits or "dataset_label" in sample.source:
        return answer, False  # a what-if leaves the session exactly as it was
    _remember_input(session, x[0], y[0], sample.digit, sample.source)
    return answer, True


def _remember_input(session: Session, x: np.ndarray, target: np.ndarray, digit: int | None,
                    source: dict[str, Any]) -> None:
    session.last_input = TracedInput(x=x.copy(), target=np.array(target), digit=digit,
                                     source=dict(source))


def export_input(session: Session) -> tuple[TracedInput, bool]:
    """The input the PyTorch export runs its model on, and whether the session traced it: its
    last traced input, or, for a session that never traced, the sample its next step would
    trace (the first of the next batch)."""
    if session.last_input is not None:
        return session.last_input, True
    rule = target_rule(session)
    index = int(_draw_batch(session, rule, 1, session.cursor)[0])
    images, labels = split_arrays("train")
    digit = int(labels[index])
    return TracedInput(x=_network_input(session, images[index][None])[0],
                       target=rule.targets(np.array([digit]))[0], digit=digit,
                       source={"dataset": "mnist", "split": "train", "index": index}), False


def gradcheck(session: Session, sample: Sample, of: dict[str, Any], epsilon: float,
              edits: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The engine's gradient check of one weight, bias or input value for one sample (computed
    on copies: the session is not touched), with the sample's label and source."""
    x, y = _sample_arrays(session, sample)
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            answer = session.network.gradcheck(x, y, of, epsilon=epsilon, edits=edits)
    except ValueError as exc:  # a bad target, edit or epsilon, named by the engine
        raise Refused(str(exc)) from exc
    _refuse_non_finite("gradient check", answer["analytic"], answer["numeric"], answer["loss"])
    answer.update(label=sample.digit, source=sample.source)
    return answer


def _candidate_optimizer(current: Optimizer | None, options: TrainingOptions) -> Optimizer:
    """The optimizer for this request, as a new object so a refused update can simply drop it.
    Same optimizer as before: its state carries on with the new hyperparameters. A different
    one starts fresh."""
    try:
        if current is not None and current.name == options.optimizer:
            state = current.state_dict()
            state.update(learning_rate=options.learning_rate, **options.hyperparameters())
            return optimizer_from_state(state)
        return make_optimizer(options.optimizer, options.learning_rate,
                              **options.hyperparameters())
    except ValueError as exc:
        raise Refused(str(exc)) from exc


def _non_finite_parameter(session: Session) -> str | None:
    for name, layer in zip(session.network.names, session.network.params):
        for key, value in layer.items():
            if not np.isfinite(value).all():
                return f"{name}.{key}"
    return None


def _diverged(where: str, options: TrainingOptions) -> Refused:
    return Refused(
        f"training diverged: {where} with learning rate {options.learning_rate} and optimizer "
        f"{options.optimizer!r}; the update was refused and the session left as it was. "
        "Try a smaller learning rate.")


def _divergence_is_checked(function):
    """A diverging update overflows inside NumPy; the caller checks every result for
    finiteness and refuses the update, so the overflow warnings would only be noise."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore"):
            return function(*args, **kwargs)
    return wrapper


def _draw_batch(session: Session, rule: TargetRule, count: int, cursor: int) -> np.ndarray:
    pool = training_pool(rule)
    return pool[(cursor + np.arange(count)) % len(pool)]


def _apply_update(session: Session, optimizer: Optimizer, trace: Trace,
                  options: TrainingOptions, before: dict[str, np.ndarray]) -> None:
    """Step ``optimizer``; on non-finite weights put ``before`` back and refuse."""
    optimizer.step(session.network.params, trace)
    broken = _non_finite_parameter(session)
    if broken:
        session.network.load_state_dict(before)
        raise _diverged(f"the update made {broken} non-finite", options)


def _true_classes(rule: TargetRule, labels: list[int | None], y: np.ndarray) -> np.ndarray:
    """The class each sample should be predicted as: its digit's (as the rule sees it), or for a
    preset's example (no digit) the class its target vector points at, judged like an output."""
    classes = np.empty(len(labels), dtype=np.int64)
    for row, label in enumerate(labels):
        if label is None:
            classes[row] = y[row] if y.ndim == 1 else rule.predicted_class(y[row: row + 1])[0]
        else:
            classes[row] = int(label == rule.positive_class) if rule.binary else label
    return classes


@_divergence_is_checked
def step(session: Session, options: TrainingOptions, first: Sample | None,
         max_history: int, fields: frozenset[str] = frozenset(LAYER_FIELDS)) -> dict[str, Any]:
    """One training iteration; ``first`` (if given) is the batch's first sample. ``fields``
    limits the trace's per-layer arrays, and with ``params`` and ``grads`` the weights before
    and after and the applied batch gradient. The whole answer is kept in the session
    (``last_step``) so the arrays left out can be asked for afterwards (``kept_step``)."""
    rule = target_rule(session)
    drawn = options.batch_size - (first is not None)
    indices = _draw_batch(session, rule, drawn, session.cursor)
    images, labels = split_arrays("train")
    digits = labels[indices]
    x, y = _network_input(session, images[indices]), rule.targets(digits)
    batch_indices: list[int | None] = indices.tolist()
    batch_labels: list[int | None] = digits.tolist()
    if first is not None:
        first_x, first_y = _sample_arrays(session, first)
        x, y = np.concatenate([first_x, x]), np.concatenate([first_y, y])
        batch_indices.insert(0, None)
        batch_labels.insert(0, first.digit)
        first_source = first.source
    else:
        first_source = {"dataset": "mnist", "split": "train", "index": int(indices[0])}

    first_trace = _engine_trace(session, x[:1], y[:1])
    batch_trace = _engine_trace(session, x, y, training=True)
    if not math.isfinite(batch_trace.loss):
        raise _diverged("the batch loss is not finite", options)
    predicted = rule.predicted_class(batch_trace.output)
    correct = predicted == _true_classes(rule, batch_labels, y)
    accuracy = float(correct.mean())
    batch = {"indices": batch_indices, "labels": batch_labels,
             "losses": batch_trace.sample_losses.tolist(), "predicted": predicted.tolist()}

    optimizer = _candidate_optimizer(session.optimizer, options)
    before = session.network.state_dict()
    _apply_update(session, optimizer, batch_trace, options, before)
    loss_after = session.network.batch_loss(x, y)
    if not math.isfinite(loss_after):
        session.network.load_state_dict(before)
        raise _diverged("the loss after the update is not finite", options)

    session.optimizer = optimizer
    session.step += 1
    session.cursor += drawn
    session.history.append(session.step, batch_trace.loss, accuracy, max_history)
    _remember_input(session, x[0], y[0], batch_labels[0], first_source)
    answer = {
        "step": session.step,
        "loss": batch_trace.loss,
        "loss_after": loss_after,
        "batch_accuracy": accuracy,
        "batch_size": options.batch_size,
        "batch_indices": batch_indices,
        "batch": batch,
        "optimizer": optimizer.name,
        "learning_rate": optimizer.learning_rate,
        "trace": trace_json(first_trace, session.network, rule, label=batch_labels[0],
                            source=first_source,
                            target=None if batch_labels[0] is not None else y[0].tolist()),
    }
    # the first sample was traced before the update: its params are the weights before
    answer["params_before"] = [layer["params"] for layer in answer["trace"]["layers"]]
    answer["params_after"] = params_json(session.network.params)
    answer["batch_grads"] = [record.grads for record in batch_trace.layers]
    session.last_step = KeptStep(answer, array_bytes(answer))
    return step_answer_with_fields(answer, fields)


def kept_step(session: Session, step: int, fields: frozenset[str]) -> dict[str, Any]:
    """Step ``step``'s answer again, limited to ``fields``, from the arrays the session kept in
    memory when it took that step; the session is not touched. Refused when the step has not
    happened (404) or its arrays are gone (409): a newer step or training replaced them, or the
    server process holding them restarted or is not the one that took the step."""
    if step > session.step:
        raise Refused(f"this session has taken {session.step} step"
                      f"{'' if session.step == 1 else 's'} so far; step {step} has not happened",
                      404)
    kept = session.last_step
    if kept is None or kept.step != step:
        moved_on = (f" (the session has moved on to step {session.step})"
                    if step < session.step else "")
        raise Refused(f"the weights and gradients of step {step} are no longer available"
                      f"{moved_on}: only the latest step's are kept, for a while, by the server "
                      "that took it. Take another step to see them.", 409)
    return step_answer_with_fields(kept.answer, fields)


@_divergence_is_checked
def train(session: Session, options: TrainingOptions, steps: int,
          max_history: int) -> dict[str, Any]:
    """``steps`` iterations; all or nothing (a divergence anywhere restores the start)."""
    rule = target_rule(session)
    images, labels = split_arrays("train")
    optimizer = _candidate_optimizer(session.optimizer, options)
    start = session.network.state_dict()
    cursor = session.cursor
    new_steps: list[int] = []
    new_loss: list[float] = []
    new_accuracy: list[float] = []
    started = time.perf_counter()
    for offset in range(steps):
        indices = _draw_batch(session, rule, options.batch_size, cursor)
        digits = labels[indices]
        x = _network_input(session, images[indices])
        trace = _engine_trace(session, x, rule.targets(digits), training=True)
        if not math.isfinite(trace.loss):
            session.network.load_state_dict(start)
            raise _diverged(f"the batch loss at step {offset + 1} of {steps} is not finite",
                            options)
        _apply_update(session, optimizer, trace, options, start)
        cursor += options.batch_size
        new_steps.append(session.step + offset + 1)
        new_loss.append(trace.loss)
        new_accuracy.append(float(rule.correct(trace.output, digits).mean()))

    session.optimizer = optimizer
    session.step += steps
    session.cursor = cursor
    session.last_step = None  # its weights are not the session's any more
    for entry in zip(new_steps, new_loss, new_accuracy):
        session.history.append(*entry, max_history)
    return {
        "step": session.step,
        "steps_run": steps,
        "loss": new_loss[-1],
        "accuracy": new_accuracy[-1],
        "optimizer": optimizer.name,
        "learning_rate": optimizer.learning_rate,
        "batch_size": options.batch_size,
        "elapsed_seconds": time.perf_counter() - started,
        "history": {"step": session.step, "steps": new_steps, "loss": new_loss,
                    "accuracy": new_accuracy, "evaluations": []},
    }


def evaluate(session: Session, limit: int, max_history: int,
             exclude: list[int] | None = None) -> dict[str, Any]:
    """Accuracy and mean loss on the first ``limit`` usable samples of the test split, leaving
    out the ``exclude`` indices (test digits the user trained on are not held out), with the
    confusion counts (row: true class, column: predicted) and the first misclassified samples
    (at most ``MISCLASSIFIED_CAP``, in test-split order). The history keeps the summary only."""
    rule = target_rule(session)
    images, labels = split_arrays("test")
    pool = evaluation_pool(rule)
    if exclude:
        pool = pool[~np.isin(pool, np.asarray(exclude, dtype=np.int64))]
    pool = pool[:limit]
    if len(pool) == 0:
        raise Refused("no test digit is left to score: every one was left out as trained on")
    confusion = np.zeros((rule.classes, rule.classes), dtype=np.int64)
    misclassified: list[dict[str, Any]] = []
    loss_sum = 0.0
    for start in range(0, len(pool), EVALUATION_CHUNK):
        indices = pool[start:start + EVALUATION_CHUNK]
        digits = labels[indices]
        trace = _engine_trace(session, _network_input(session, images[indices]),
                              rule.targets(digits))
        truth, predicted = rule.true_classes(digits), rule.predicted_class(trace.output)
        np.add.at(confusion, (truth, predicted), 1)
        wrong = np.flatnonzero(truth != predicted)[:MISCLASSIFIED_CAP - len(misclassified)]
        confidence = rule.confidence(trace.output, predicted)
        misclassified.extend(
            {"index": int(indices[row]), "label": int(digits[row]), "true_class": int(truth[row]),
             "predicted": int(predicted[row]), "probability": float(confidence[row])}
            for row in wrong)
        loss_sum += trace.loss * len(indices)
    evaluation = {"step": session.step, "split": "test", "samples": int(len(pool)),
                  "accuracy": float(np.trace(confusion)) / len(pool), "loss": loss_sum / len(pool)}
    session.history.add_evaluation(dict(evaluation), max_history)
    return {**evaluation, "classes": rule.classes, "confusion": confusion.tolist(),
            "misclassified_count": int(len(pool) - np.trace(confusion)),
            "misclassified": misclassified}
