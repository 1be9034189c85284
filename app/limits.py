"""Resource caps a classroom server needs beyond the engine's own sanity limits.

The engine refuses specs that are absurd for any machine (``engine.spec``: millions of
parameters, hundreds of layers). A shared server needs tighter bounds, set in ``Settings``:
how big a network a session may hold, how much memory its parameters and optimizer state take,
and how much work and working memory one request may ask for. Each is estimated from the
normalized spec before anything is allocated or computed, and a request over a cap is refused
with a 422 that says, in plain words, what the request needs and what the server allows (the
setting's name goes to the log, not to the user).

Working memory is what the engine really allocates (``engine.memory``): the arrays a trace keeps
and every conv layer's scratch (padded input, im2col matrix and its gradient), which for big
kernels is far more than the activations.

Work is counted in multiply-adds of the forward pass (conv: output size × C × HH × WW; dense:
units × inputs; pooling: output size × window), and a traced sample (forward and backward) as
three forward passes: the backward pass computes two products per forward one (dx and dW).

The engine's requests also take one of a fixed number of computation slots, so the working memory
in flight is bounded by slots × ``max_request_bytes`` however many requests arrive at once, and a
burst queues instead of thrashing the CPU; a request that waits too long for a slot gets a 429.
A request waits for its session's turn before it asks for a slot, so one session holds at most
one slot and the slots are shared fairly among sessions (``computation_slot``).

Quick work (a trace of a small network: LeNet-5's takes 0.5 ms) runs on the event loop itself
rather than on a worker thread, if nothing it needs would make it wait (``computation``'s
``quick``; ``WouldWait``): handing it to a thread and back costs two thread wake-ups, about a
tenth of a LeNet-5 trace request, and a request arriving meanwhile waits at most that long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from math import prod
from typing import Any, TypeVar
from weakref import WeakKeyDictionary, WeakValueDictionary

import anyio
import orjson
from fastapi import Request

from engine import normalize_spec, parameter_count
from engine.memory import forward_bytes, trace_bytes

from app.sessions import OPTIMIZER_BUFFERS_RESERVED
from app.settings import Settings
from app.store import describe_bytes
from app.training import Refused

TRACE_COST = 3  # forward + backward, in forward passes
# The most work run on the event loop (in multiply-adds, counted as check_work counts them): a
# LeNet-5 trace is 0.85 million (0.5 ms here), so other requests wait at most about 2 ms.
QUICK_WORK_MACS = 3_000_000
T = TypeVar("T")

log = logging.getLogger("cnnviz")


class WouldWait(Exception):
    """Raised by work tried on the event loop (``computation(..., quick=True)``) where it would
    wait (for a session another request holds, a store busy writing, loading from disk or over
    the network) or run longer than ``QUICK_WORK_MACS``; raised before anything has changed, so
    the work starts over on a worker thread."""


_ON_EVENT_LOOP: ContextVar[bool] = ContextVar("cnnviz_work_on_event_loop", default=False)


def on_event_loop() -> bool:
    """Whether the work running now was tried on the event loop, where it must not wait."""
    return _ON_EVENT_LOOP.get()


class CapExceeded(Refused):
    """A request over a resource cap; ``cap`` is the setting's name (logged, not shown)."""

    def __init__(self, cap: str, limit: int, detail: str) -> None:
        super().__init__(detail, status_code=422)
        self.cap = cap
        self.limit = limit
        log.info("refused a request over the cap %s (CNNVIZ_%s = %s)", cap, cap.upper(), limit)


@dataclass(frozen=True)
class SpecCost:
    layers: int
    input_side: int
    filters: int
    units: int
    parameters: int
    activations: int  # values per sample: the input and every layer's output
    forward_macs: int  # per sample
    itemsize: int

    @classmethod
    def of(cls, spec: Any) -> "SpecCost":
        """Cost of a spec; raises the engine's SpecError if it is not a valid spec at all."""
        normalized, shapes = normalize_spec(spec)
        parameters = activations = macs = filters = units = 0
        for layer, (in_shape, out_shape) in zip(normalized["layers"], shapes):
            outputs = prod(out_shape)
            activations += outputs
            parameters += parameter_count(layer, in_shape)
            if layer["type"] == "conv":
                window = in_shape[0] * prod(layer["kernel"])
                macs += outputs * window
                filters = max(filters, layer["filters"])
            elif layer["type"] == "dense":
                macs += layer["units"] * in_shape[0]
                units = max(units, layer["units"])
            elif layer["type"] in ("maxpool", "avgpool"):
                macs += outputs * prod(layer["size"])
        input_shape = normalized["input_shape"]
        return cls(
            layers=len(normalized["layers"]),
            input_side=max(input_shape[1:]),
            filters=filters,
            units=units,
            parameters=parameters,
            activations=activations + prod(input_shape),
            forward_macs=macs,
            itemsize=4 if normalized["dtype"] == "float32" else 8,
        )

    @property
    def session_bytes(self) -> int:
        """Parameters plus room for the largest optimizer state, as the store charges them."""
        return self.parameters * self.itemsize * (1 + OPTIMIZER_BUFFERS_RESERVED)


# (cap, what is counted, how to get under it)
SPEC_CAPS = (
    ("max_spec_layers", "layers", "use fewer layers"),
    ("max_spec_input_side", "pixels on the input's longer side", "use a smaller input"),
    ("max_spec_filters", "filters in its largest conv layer", "use fewer filters"),
    ("max_spec_units", "units in its largest dense layer", "use fewer units"),
    ("max_spec_parameters", "parameters", "use a smaller network"),
    ("max_spec_activations", "values in one sample's trace (per kind of array)",
     "use a smaller network or input"),
)


def _refuse_count(cap: str, value: int, limit: int, what: str, hint: str) -> CapExceeded:
    return CapExceeded(cap, limit, f"this network has {value:,} {what}; the server allows at "
                                   f"most {limit:,} -- {hint}")


def _refuse_bytes(cap: str, value: int, limit: int, what: str, hint: str) -> CapExceeded:
    return CapExceeded(cap, limit, f"{what} needs about {describe_bytes(value)} of memory; the "
                                   f"server allows {describe_bytes(limit)} -- {hint}")


def check_spec(spec: Any, settings: Settings) -> SpecCost:
    """Refuse a spec over any size cap; returns its cost."""
    cost = SpecCost.of(spec)
    values = {"max_spec_layers": cost.layers, "max_spec_input_side": cost.input_side,
              "max_spec_filters": cost.filters, "max_spec_units": cost.units,
              "max_spec_parameters": cost.parameters, "max_spec_activations": cost.activations}
    for cap, what, hint in SPEC_CAPS:
        limit = getattr(settings, cap)
        if values[cap] > limit:
            raise _refuse_count(cap, values[cap], limit, what, hint)
    if cost.session_bytes > settings.max_session_bytes:
        raise _refuse_bytes("max_session_bytes", cost.session_bytes, settings.max_session_bytes,
                            "this network's weights and optimizer state",
                            "use a smaller network")
    one_sample = trace_bytes(spec, 1)
    if one_sample > settings.max_request_bytes:
        raise _refuse_bytes("max_request_bytes", one_sample, settings.max_request_bytes,
                            "tracing one sample of this network",
                            "use a smaller network, fewer filters or smaller kernels")
    return cost


def check_work(spec: Any, settings: Settings, *, batch: int, traced: int,
               forward_only: int = 0) -> None:
    """Refuse a request whose compute or working memory is over its cap. ``batch`` is the
    largest number of samples traced at once (counting every trace the request holds at the
    same time), ``traced`` the samples traced in all (forward and backward), ``forward_only``
    the samples that only go forward."""
    forward_macs, memory = _work_estimates(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS),
                                           batch, bool(forward_only))
    macs = forward_macs * (TRACE_COST * traced + forward_only)
    if macs > settings.max_request_macs:
        raise CapExceeded("max_request_macs", settings.max_request_macs,
                          f"this request needs about {macs:,} multiply-adds ({traced:,} samples "
                          f"traced and {forward_only:,} only passed forward); the server allows "
                          f"{settings.max_request_macs:,} per request -- use fewer samples or "
                          "steps, or a smaller network")
    if memory > settings.max_request_bytes:
        raise CapExceeded("max_request_bytes", settings.max_request_bytes,
                          f"this request needs about {describe_bytes(memory)} of working memory; "
                          f"the server allows {describe_bytes(settings.max_request_bytes)} per "
                          "request -- use a smaller batch or network")
    if macs > QUICK_WORK_MACS and on_event_loop():
        raise WouldWait


@lru_cache(maxsize=1024)
def _work_estimates(spec_json: bytes, batch: int, forward_only: bool) -> tuple[int, int]:
    """(multiply-adds of one sample's forward pass, working memory of a batch) of the spec
    written as ``spec_json``. Cached: estimating normalizes the spec layer by layer, which took
    longer than the rest of a LeNet-5 trace request's bookkeeping, and a session asks the same
    question on every request."""
    spec = orjson.loads(spec_json)
    memory = max(trace_bytes(spec, batch), forward_bytes(spec, batch) if forward_only else 0)
    return SpecCost.of(spec).forward_macs, memory


def _per_loop(app: Any, name: str, build: Any) -> Any:
    """One object per event loop serving the app (a server has one; test clients may start
    several in turn), created inside that loop on first use."""
    by_loop = getattr(app.state, name, None)
    if by_loop is None:
        by_loop = WeakKeyDictionary()
        setattr(app.state, name, by_loop)
    loop = asyncio.get_running_loop()
    if loop not in by_loop:
        by_loop[loop] = build()
    return by_loop[loop]


@asynccontextmanager
async def computation_slot(request: Request) -> AsyncIterator[None]:
    """Wait for the session's turn, then for one computation slot, and hold both for the block
    (429 if they do not come within the wait).

    Requests on one session run one at a time anyway (the session's lock), so each session
    queues behind its own turn first, and only the request whose turn it is competes for a slot.
    A client that fires a hundred requests at one session therefore holds at most one slot, and
    the slots go round the sessions in the order they asked (both queues are first come, first
    served). Waiting happens on the event loop, so queued requests tie up no worker thread.
    asyncio's own lock and semaphore: free, they are taken without a pass through the event
    loop, as anyio's are not."""
    settings: Settings = request.app.state.settings
    slots = _per_loop(request.app, "computation_slots",
                      lambda: asyncio.Semaphore(settings.max_concurrent_computations))
    turns: WeakValueDictionary = _per_loop(request.app, "session_turns", WeakValueDictionary)
    session_id = request.path_params.get("session_id", "")
    turn = turns.get(session_id)
    if turn is None:
        turn = turns[session_id] = asyncio.Lock()
    has_turn = has_slot = False
    try:
        # Both free: taken at once, without a suspension, so without the timeout's cancel scope
        # (a tenth of this function's cost on a LeNet-5 trace).
        free = not turn.locked() and not slots.locked()
        with nullcontext() if free else anyio.move_on_after(settings.computation_wait_seconds):
            await turn.acquire()
            has_turn = True
            await slots.acquire()
            has_slot = True
        if not has_turn:
            raise Refused(
                f"this session is still busy with earlier requests after "
                f"{settings.computation_wait_seconds:g} s; try again when they have finished",
                status_code=429)
        if not has_slot:
            raise Refused(
                f"the server is busy: all {settings.max_concurrent_computations} of its "
                f"computation slots stayed taken for {settings.computation_wait_seconds:g} s; "
                "try again shortly", status_code=429)
        yield
    finally:
        if has_slot:
            slots.release()
        if has_turn:
            turn.release()


async def computation(request: Request, work: Callable[[], T], *, quick: bool = False) -> T:
    """What a training route does: ``work`` (the engine's part, with the session's lock) on a
    worker thread once the request has its session's turn and a computation slot, both
    released as soon as it returns. The routes are ``async def`` and call this rather than
    being plain functions with the slot as a dependency: FastAPI's machinery for a yielding
    dependency and a sync route cost more than a LeNet-5 trace's own bookkeeping.

    With ``quick``, the work is first tried right here on the event loop; if it raises
    ``WouldWait`` (``locked_session`` and ``check_work`` do, before anything changes) it goes
    to a worker thread after all."""
    async with computation_slot(request):
        if quick:
            on_loop = _ON_EVENT_LOOP.set(True)
            try:
                return work()
            except WouldWait:
                pass
            finally:
                _ON_EVENT_LOOP.reset(on_loop)
        return await anyio.to_thread.run_sync(work)
