"""Head-based sampling: the root of a trace decides, every later span (in any process)
follows the ``sampled`` flag its parent carries.

The decision for a root is the OpenTelemetry ``TraceIdRatioBased`` one (the lower 64 bits
of the trace id against a bound), so processes configured alike agree on a trace even
without a parent, and a trace is always kept or dropped whole.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

__all__ = ["LIMIT", "TraceSampler"]

log = logging.getLogger("agentplex.tracing")

LIMIT = (1 << 64) - 1
"""The lower 64 bits of a trace id, which the ratio decision compares."""
_NAMES = ("always_on", "always_off", "traceidratio", "parentbased_always_on",
          "parentbased_always_off", "parentbased_traceidratio")


class TraceSampler(Sampler):
    """Keeps a ``ratio`` of traces. ``parent_based`` (the default) makes every span with a
    parent follow the parent's decision, so a trace is never cut in two.

    Also an OpenTelemetry SDK :class:`~opentelemetry.sdk.trace.sampling.Sampler`, so spans
    made through the SDK (a user's own tracer) are sampled the same way.
    """

    def __init__(self, ratio: float = 1.0, *, parent_based: bool = True) -> None:
        self.ratio = 1.0
        self.parent_based = True
        self.bound = LIMIT + 1
        self.set(ratio, parent_based=parent_based)

    def set(self, ratio: float, *, parent_based: bool = True) -> None:
        """Change the ratio and parent-following in place (the process's sampler is shared
        by every tracer already handed out)."""
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"a sampling ratio is between 0 and 1, not {ratio!r}")
        self.ratio = float(ratio)
        self.parent_based = parent_based
        self.bound = round(self.ratio * (LIMIT + 1))

    @classmethod
    def from_env(cls) -> TraceSampler:
        """The sampler named by ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``
        (default ``parentbased_always_on``)."""
        name = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
        if name not in _NAMES:
            raise ValueError(f"unsupported OTEL_TRACES_SAMPLER {name!r} "
                             f"(agentplex knows {', '.join(_NAMES)})")
        parent_based = name.startswith("parentbased_")
        kind = name.removeprefix("parentbased_")
        if kind == "always_on":
            return cls(1.0, parent_based=parent_based)
        if kind == "always_off":
            return cls(0.0, parent_based=parent_based)
        arg = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            ratio = float(arg)
        except ValueError:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG must be a number, not {arg!r}") from None
        return cls(ratio, parent_based=parent_based)

    def sampled(self, parent: trace.SpanContext | None, trace_id: int) -> bool:
        """Whether a span of trace ``trace_id`` under ``parent`` (if any) is recorded."""
        if parent is not None and self.parent_based:
            return bool(parent.trace_flags & 1)
        return (trace_id & LIMIT) < self.bound

    # -- the SDK's Sampler interface ------------------------------------------------------

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: trace.SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        keep = self.sampled(parent if parent.is_valid else None, trace_id)
        state: Any = parent.trace_state if parent.is_valid else None
        return SamplingResult(Decision.RECORD_AND_SAMPLE if keep else Decision.DROP,
                              attributes if keep else None, state)

    def get_description(self) -> str:
        kind = f"TraceIdRatioBased{{{self.ratio}}}"
        return f"ParentBased{{root:{kind}}}" if self.parent_based else kind

    def __repr__(self) -> str:
        return f"TraceSampler(ratio={self.ratio}, parent_based={self.parent_based})"
