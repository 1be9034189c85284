"""Resource caps a classroom server needs beyond the engine's own sanity limits.

The engine refuses specs that are absurd for any machine (``engine.spec``: millions of
parameters, hundreds of layers). A shared server needs tighter bounds, set in ``Settings``:
how big a network a session may hold, how much memory its parameters and optimizer state take,
and how much work and working memory one request may ask for. Each is estimated from the
normalized spec before anything is allocated or computed, and a request over a cap is refused
with a 422 whose detail names the cap and its ``CNNVIZ_`` setting.

Work is counted in multiply-adds of the forward pass (conv: output size × C × HH × WW; dense:
units × inputs; pooling: output size × window), and a traced sample (forward and backward) as
three forward passes: the backward pass computes two products per forward one (dx and dW).

The engine's requests also take one of a fixed number of computation slots, so the working memory
in flight is bounded by slots × ``max_request_bytes`` however many requests arrive at once, and a
burst queues instead of thrashing the CPU; a request that waits too long for a slot gets a 429.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from math import prod
from typing import Any
from weakref import WeakKeyDictionary

import anyio
from fastapi import Request

from engine import normalize_spec

from app.sessions import OPTIMIZER_BUFFERS_RESERVED
from app.settings import Settings
from app.training import Refused

TRACE_COST = 3  # forward + backward, in forward passes
# Arrays a trace keeps per layer and sample: input, z, a, delta and dL/da.
TRACE_ARRAYS = 5


class CapExceeded(Refused):
    """A request over a resource cap; ``cap`` is the setting's name."""

    def __init__(self, cap: str, limit: int, detail: str) -> None:
        super().__init__(f"{detail}: over the cap {cap} = {limit:,} "
                         f"(CNNVIZ_{cap.upper()})", status_code=422)
        self.cap = cap
        self.limit = limit


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
            if layer["type"] == "conv":
                window = in_shape[0] * prod(layer["kernel"])
                parameters += layer["filters"] * (window + 1)
                macs += outputs * window
                filters = max(filters, layer["filters"])
            elif layer["type"] == "dense":
                parameters += layer["units"] * (in_shape[0] + 1)
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

    def trace_bytes(self, batch: int) -> int:
        """Working memory of one traced batch: every layer's arrays for every sample."""
        return batch * self.activations * TRACE_ARRAYS * self.itemsize


def _check(value: int, cap: str, settings: Settings, what: str) -> None:
    limit = getattr(settings, cap)
    if value > limit:
        raise CapExceeded(cap, limit, f"{what} is {value:,}")


def check_spec(spec: Any, settings: Settings) -> SpecCost:
    """Refuse a spec over any size cap; returns its cost."""
    cost = SpecCost.of(spec)
    _check(cost.layers, "max_spec_layers", settings, "the number of layers")
    _check(cost.input_side, "max_spec_input_side", settings, "the input's longer side")
    _check(cost.filters, "max_spec_filters", settings, "the largest number of conv filters")
    _check(cost.units, "max_spec_units", settings, "the largest number of dense units")
    _check(cost.parameters, "max_spec_parameters", settings, "the number of parameters")
    _check(cost.activations, "max_spec_activations", settings,
           "the number of values one sample's trace holds per array")
    _check(cost.session_bytes, "max_session_bytes", settings,
           "the session's memory (parameters and optimizer state, in bytes)")
    _check(cost.trace_bytes(1), "max_request_bytes", settings,
           "the working memory of tracing one sample (bytes)")
    return cost


def check_work(spec: Any, settings: Settings, *, batch: int, traced: int,
               forward_only: int = 0) -> None:
    """Refuse a request whose compute or working memory is over its cap. ``batch`` is the
    largest number of samples traced at once, ``traced`` the samples traced in all (forward and
    backward), ``forward_only`` the samples that only go forward."""
    cost = SpecCost.of(spec)
    macs = cost.forward_macs * (TRACE_COST * traced + forward_only)
    _check(macs, "max_request_macs", settings,
           f"this request's work ({traced:,} traced and {forward_only:,} forward-only samples "
           f"of a network costing {cost.forward_macs:,} multiply-adds each way) in multiply-adds")
    _check(cost.trace_bytes(batch), "max_request_bytes", settings,
           f"the working memory of tracing a batch of {batch:,} (bytes)")


async def computation_slot(request: Request) -> AsyncIterator[None]:
    """A route dependency: hold one computation slot for the request (429 if none frees up).
    Waiting happens on the event loop, so queued requests do not tie up worker threads."""
    settings: Settings = request.app.state.settings
    # One semaphore per event loop serving the app (a server has one; test clients may start
    # several in turn), created inside that loop on first use.
    by_loop = getattr(request.app.state, "computation_slots", None)
    if by_loop is None:
        by_loop = request.app.state.computation_slots = WeakKeyDictionary()
    loop = asyncio.get_running_loop()
    slots = by_loop.get(loop)
    if slots is None:
        slots = by_loop[loop] = anyio.Semaphore(settings.max_concurrent_computations)
    with anyio.move_on_after(settings.computation_wait_seconds) as waiting:
        await slots.acquire()
    if waiting.cancelled_caught:
        raise Refused(
            f"the server is busy: its {settings.max_concurrent_computations} computation slots "
            f"(CNNVIZ_MAX_CONCURRENT_COMPUTATIONS) stayed taken for "
            f"{settings.computation_wait_seconds:g} s; try again shortly", status_code=429)
    try:
        yield
    finally:
        slots.release()
