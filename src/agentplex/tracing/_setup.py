"""Installing OpenTelemetry: one tracer provider, exporters chosen by code or ``OTEL_*``.

The provider is process-global and OpenTelemetry lets it be set only once, so agentplex
installs a single provider whose :class:`SpanDispatcher` forwards finished spans to every
exporter attached now — the exporters configured at start-up plus those of each running
experiment, which attach on entry and detach on exit. agentplex's own spans come from its
lean :class:`~._recorder.Recorder` and reach the dispatcher directly; spans made through
the SDK (a user's own tracer) reach it as the provider's span processor.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from ._exporters import BufferedSpanProcessor, JsonLinesSpanExporter
from ._otlp import otlp_for
from ._recorder import Recorder, SpanRecord
from ._sampling import TraceSampler

__all__ = ["SpanDispatcher", "configure_tracing", "dispatcher", "exporters_from_env",
           "recorder", "sampler"]


class SpanDispatcher(SpanProcessor):
    """Forwards spans to a changing set of span processors.

    A processor with an ``on_record`` method (agentplex's local files) takes agentplex's
    span records as they are; any other gets an SDK ``ReadableSpan``, built once per span
    and only while such a processor is attached.
    """

    def __init__(self) -> None:
        self._processors: tuple[SpanProcessor, ...] = ()
        self._direct: tuple[Any, ...] = ()
        self._sdk: tuple[SpanProcessor, ...] = ()
        self._lock = threading.Lock()

    def attach(self, processor: SpanProcessor) -> None:
        """Start forwarding spans to ``processor``."""
        with self._lock:
            self._set((*self._processors, processor))

    def detach(self, processor: SpanProcessor) -> None:
        """Stop forwarding to ``processor``, flush it and shut it down."""
        with self._lock:
            self._set(tuple(p for p in self._processors if p is not processor))
        processor.force_flush()
        processor.shutdown()

    def _set(self, processors: tuple[SpanProcessor, ...]) -> None:
        self._processors = processors
        self._direct = tuple(p.on_record for p in processors if hasattr(p, "on_record"))
        self._sdk = tuple(p for p in processors if not hasattr(p, "on_record"))

    def emit(self, record: SpanRecord) -> None:
        """Hand an ended agentplex span to every processor."""
        for on_record in self._direct:
            on_record(record)
        if self._sdk:
            readable = record.readable()
            for p in self._sdk:
                p.on_end(readable)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for p in self._processors:
            p.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for p in self._processors:
            p.on_end(span)

    def shutdown(self) -> None:
        for p in self._processors:
            p.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in self._processors)


_dispatcher: SpanDispatcher | None = None
_provider: TracerProvider | None = None
_recorder: Recorder | None = None
_sampler: TraceSampler | None = None
_lock = threading.Lock()


def sampler() -> TraceSampler:
    """The process's sampler (from ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``
    until :func:`configure_tracing` or an experiment sets another)."""
    global _sampler
    if _sampler is None:
        _sampler = TraceSampler.from_env()
    return _sampler


def dispatcher(service_name: str | None = None) -> SpanDispatcher:
    """The process's span dispatcher, installing agentplex's tracer provider on first use.

    If another tracer provider (an SDK ``TracerProvider``) is already installed, the
    dispatcher is added to it instead, so agentplex's exporters work beside the user's;
    that provider's own sampler then decides.
    """
    global _dispatcher, _provider, _recorder
    with _lock:
        if _dispatcher is not None:
            return _dispatcher
        hub = SpanDispatcher()
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            current.add_span_processor(hub)
        else:
            name = service_name or os.environ.get("OTEL_SERVICE_NAME", "agentplex")
            resource = Resource.create({"service.name": name})
            provider = TracerProvider(resource=resource, sampler=sampler())
            provider.add_span_processor(hub)
            trace.set_tracer_provider(provider)
            if trace.get_tracer_provider() is provider:
                _provider = provider
                _recorder = Recorder(sampler(), hub.emit, resource)
        _dispatcher = hub
        return hub


def recorder() -> Recorder | None:
    """agentplex's own tracer, when the installed provider is agentplex's."""
    return _recorder if _provider is not None and trace._TRACER_PROVIDER is _provider else None


def exporters_from_env() -> list[SpanExporter]:
    """Exporters named by ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``).

    OTLP uses ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``
    (``grpc``, ``http/protobuf``) and the standard endpoint and header variables, read by
    the OTLP exporters themselves.
    """
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")
             if n.strip()]
    out: list[SpanExporter] = []
    for name in names:
        if name == "none":
            continue
        if name == "console":
            out.append(ConsoleSpanExporter())
        elif name == "otlp":
            out.append(otlp_exporter())
        else:
            raise ValueError(f"unsupported OTEL_TRACES_EXPORTER {name!r} "
                             "(agentplex knows otlp, console and none)")
    return out


def otlp_exporter(protocol: str | None = None, **kwargs: Any) -> SpanExporter:
    """An OTLP span exporter over gRPC or HTTP, configured by the ``OTEL_*`` variables."""
    exporter: SpanExporter = otlp_for("traces", protocol, **kwargs)
    return exporter


def configure_tracing(
    *,
    file: str | Path | None = None,
    console: bool = False,
    exporters: Sequence[SpanExporter] = (),
    from_env: bool = True,
    batch: bool = True,
    sampling: TraceSampler | float | None = None,
) -> list[SpanProcessor]:
    """Send spans to a JSON-lines ``file``, the console, given exporters, and those named
    by ``OTEL_TRACES_EXPORTER``. Returns the attached processors (detach them with
    ``dispatcher().detach(p)``).

    ``sampling`` keeps a share of traces: a ratio (parent-based: a span follows its parent,
    also across processes) or a :class:`TraceSampler`; by default ``OTEL_TRACES_SAMPLER``
    and ``OTEL_TRACES_SAMPLER_ARG`` decide (everything when unset).
    """
    chosen: list[SpanExporter] = list(exporters)
    processors: list[SpanProcessor] = []
    if sampling is not None:
        chosen_sampler = sampling if isinstance(sampling, TraceSampler) else \
            TraceSampler(sampling)
        sampler().set(chosen_sampler.ratio, parent_based=chosen_sampler.parent_based)
    hub = dispatcher()
    if file is not None:  # a local file: cheap to write, so no background thread
        local = BufferedSpanProcessor(JsonLinesSpanExporter(file),
                                      batch_size=512 if batch else 1)
        hub.attach(local)
        processors.append(local)
    if console:
        chosen.append(ConsoleSpanExporter())
    if from_env:
        chosen.extend(exporters_from_env())
    for exporter in chosen:
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        hub.attach(processor)
        processors.append(processor)
    return processors
