"""agentplex's own span recorder: an OpenTelemetry API ``Tracer`` whose spans are plain
records.

The SDK's span does a lot per span (attribute validation and copies, locks, a
``ReadableSpan`` copy on end, a processor chain). agentplex's spans need none of it: a
:class:`SpanRecord` holds its fields, and on ``end`` goes to the dispatcher, which writes
it to local files as it is and builds an SDK ``ReadableSpan`` only for exporters that need
one (OTLP, console, a user's processor). A trace that sampling drops has one
:class:`DroppedSpan`, made at its root (or where it enters this process), carrying the
trace's ids with the ``sampled`` flag off: no record, no attributes, and every later span
of the trace here is that same object, while its ``traceparent`` makes every other process
drop the trace too.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from random import getrandbits
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util._decorator import _agnosticcontextmanager
from opentelemetry.util.types import Attributes, AttributeValue

from ._context import current_span
from ._sampling import LIMIT, TraceSampler

__all__ = ["DroppedSpan", "Recorder", "RunAnchor", "SpanRecord"]

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_DROPPED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)
_NO_STATE = TraceState()
_NO_PARENT = INVALID_SPAN.get_span_context()
_SCOPE = InstrumentationScope("agentplex")
_get_current_span = trace.get_current_span
_time_ns = time.time_ns


def _context(trace_id: int, flags: TraceFlags, parent: SpanContext | None) -> SpanContext:
    """A new span's context (built as the tuple it is: ``SpanContext()`` re-validates)."""
    state = parent[4] if parent is not None else _NO_STATE
    return tuple.__new__(SpanContext, (trace_id, getrandbits(64) or 1, False, flags, state,
                                       True))


class DroppedSpan(NonRecordingSpan):
    """The span standing for a trace that sampling dropped: its children are itself, so
    instrumentation finding it current knows there is nothing to record (see
    :func:`~agentplex.tracing.lowlevel.would_record`).

    Made with a :class:`SpanContext`, or, for a dropped root, with just its random trace
    id: the context (span id: the id's upper half) is built the first time anyone asks
    for it — most dropped roots are never asked, nothing leaving the process.
    """

    def __init__(self, context: SpanContext | int) -> None:
        self._context = context  # type: ignore[assignment]

    def get_span_context(self) -> SpanContext:
        ctx: SpanContext | int = self._context
        if type(ctx) is int:
            ctx = self._context = tuple.__new__(SpanContext, (
                ctx, ctx >> 64 or 1, False, _DROPPED, _NO_STATE, True))
        return ctx  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"DroppedSpan({self.get_span_context()!r})"


class RunAnchor(NonRecordingSpan):
    """Stands for an experiment's ``run`` span while the run samples: work started under
    it begins a trace of its own (linked to the run), so each is kept or dropped whole."""


class SpanRecord(trace.Span):
    """One recording span: plain fields, read like an SDK ``ReadableSpan``."""

    __slots__ = ("_recorder", "attributes", "context", "end_time", "events", "kind", "links",
                 "name", "parent", "start_time", "status")

    def __init__(self, recorder: Recorder, name: str, context: SpanContext,
                 parent: SpanContext | None, kind: SpanKind, attributes: dict[str, Any],
                 links: Sequence[Link], start_time: int) -> None:
        self._recorder = recorder
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.attributes = attributes
        self.links = links
        self.events: Sequence[Event] = ()
        self.status = _UNSET
        self.start_time = start_time
        self.end_time: int | None = None

    @property
    def resource(self) -> Resource:
        return self._recorder.resource

    @property
    def service(self) -> Any:
        """The ``service.name`` of the process that recorded the span."""
        return self._recorder.service

    @property
    def service_json(self) -> str:
        """:attr:`service` as JSON (formatted once per process)."""
        return self._recorder.service_json

    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self.end_time is None and value is not None:
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        if self.end_time is None:
            self.attributes.update((k, v) for k, v in attributes.items() if v is not None)

    def add_event(self, name: str, attributes: Attributes = None,
                  timestamp: int | None = None) -> None:
        if self.end_time is None:
            self.events = [*self.events, Event(name, attributes, timestamp or _time_ns())]

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self.end_time is None and context.is_valid:
            self.links = (*self.links, Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_time is not None:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if self.status.status_code is StatusCode.OK:  # OK is final
            return
        self.status = status

    def record_exception(self, exception: BaseException, attributes: Attributes = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        attrs: dict[str, Any] = {
            "exception.type": type(exception).__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        attrs.update(attributes or {})
        self.add_event("exception", attrs, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = end_time or _time_ns()
        self._recorder.sink(self)

    def readable(self) -> ReadableSpan:
        """This span as the SDK's ``ReadableSpan``, for SDK exporters and processors."""
        return ReadableSpan(
            name=self.name, context=self.context, parent=self.parent,
            resource=self._recorder.resource, attributes=dict(self.attributes),
            events=tuple(self.events), links=tuple(self.links), kind=self.kind,
            status=self.status, start_time=self.start_time, end_time=self.end_time,
            instrumentation_scope=_SCOPE)

    def __repr__(self) -> str:
        return (f"SpanRecord({self.name!r}, trace_id={self.context.trace_id:032x}, "
                f"span_id={self.context.span_id:016x})")


class Recorder(trace.Tracer):
    """agentplex's tracer: samples at the head and records spans as :class:`SpanRecord`."""

    def __init__(self, sampler: TraceSampler, sink: Callable[[SpanRecord], None],
                 resource: Resource) -> None:
        self.sampler = sampler
        self.sink = sink
        self.resource = resource
        self.service = resource.attributes.get("service.name")
        self.service_json = json.dumps(self.service)

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        return self.start(name, context, kind, attributes, links, start_time)

    def start(self, name: str, context: Context | None = None,
              kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes = None,
              links: Sequence[Link] | None = None, start_time: int | None = None,
              force: bool = False) -> trace.Span:
        """Start a span (``force``: record it whatever the sampler says)."""
        parent_span = current_span() if context is None else _get_current_span(context)
        return self.child(parent_span, name, kind, attributes, links, start_time, force)

    def child(self, parent_span: trace.Span, name: str, kind: SpanKind = SpanKind.INTERNAL,
              attributes: Attributes = None, links: Sequence[Link] | None = None,
              start_time: int | None = None, force: bool = False) -> trace.Span:
        """Start a span under ``parent_span`` (``INVALID_SPAN``: a root). In a dropped
        trace the span is a :class:`DroppedSpan`: the parent itself when it is one."""
        ctx = _NO_PARENT if parent_span is INVALID_SPAN else parent_span.get_span_context()
        sampler = self.sampler
        parent: SpanContext | None = ctx
        if not ctx[5] or type(parent_span) is RunAnchor:  # a root (ctx[5]: is_valid)
            if ctx[5]:  # an experiment that samples: a trace per unit, linked to the run
                links = (*(links or ()), Link(ctx))
            parent = None
            trace_id = getrandbits(128) or 1
            if not force and trace_id & LIMIT >= sampler.bound:  # TraceIdRatioBased
                return DroppedSpan(trace_id)
        else:
            trace_id = ctx[0]
            if not force and sampler.parent_based and not ctx[3] & 1:
                # dropped with its parent, which stands in for it
                return parent_span if type(parent_span) is DroppedSpan else DroppedSpan(ctx)
            if not force and not sampler.parent_based and trace_id & LIMIT >= sampler.bound:
                return DroppedSpan(_context(trace_id, _DROPPED, ctx))
        attrs = {k: v for k, v in attributes.items() if v is not None} if attributes else {}
        return SpanRecord(self, name, _context(trace_id, _SAMPLED, parent), parent, kind,
                          attrs, links or (), start_time or _time_ns())

    @_agnosticcontextmanager  # the decorator the API's Tracer uses
    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start(name, context, kind, attributes, links, start_time)
        with trace.use_span(span, end_on_exit=end_on_exit, record_exception=record_exception,
                            set_status_on_exception=set_status_on_exception) as current:
            yield current

