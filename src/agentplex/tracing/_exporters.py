"""Span exporters and the one-call local setup."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from ._json import dumper
from ._recorder import SpanRecord

__all__ = ["BufferedSpanProcessor", "JsonLinesSpanExporter", "span_line", "span_to_dict"]

_KIND = {k: k.name for k in SpanKind}
_STATUS = {c: c.name for c in StatusCode}
_encode = json.JSONEncoder(default=str).encode
_string = json.encoder.encode_basestring_ascii
_json = dumper(default=str)  # the attributes of every span line

_Q = '"'


def _links(span: ReadableSpan | SpanRecord) -> list[dict[str, str]]:
    return [{"trace_id": format(link.context.trace_id, "032x"),
             "span_id": format(link.context.span_id, "016x")} for link in span.links]


def _with_events(span: ReadableSpan | SpanRecord, out: dict[str, Any]) -> dict[str, Any]:
    """``out`` with the span's events and links, where it has any."""
    if span.events:
        out["events"] = [{"name": e.name, "time": e.timestamp,
                          "attributes": dict(e.attributes or {})} for e in span.events]
    if span.links:
        out["links"] = _links(span)
    return out


def span_line(span: ReadableSpan | SpanRecord) -> str:
    """One finished span as a line of JSON (:func:`span_to_dict`, newline included)."""
    if type(span) is not SpanRecord or span.events or span.links:
        return _encode(span_to_dict(span)) + "\n"
    ctx = span.context
    parent = span.parent
    return (f'{{"name": {_string(span.name)}, "trace_id": "{ctx[0]:032x}", '
            f'"span_id": "{ctx[1]:016x}", "parent_id": '
            f'{f"{_Q}{parent[1]:016x}{_Q}" if parent is not None else "null"}, '
            f'"kind": "{span.kind._name_}", "start": {span.start_time}, '
            f'"end": {span.end_time}, "status": "{span.status.status_code._name_}", '
            f'"attributes": {_json(span.attributes)}, '
            f'"service": {span._recorder.service_json}}}\n')  # (enum names, no hashing)


def _record_to_dict(span: SpanRecord) -> dict[str, Any]:
    ctx = span.context
    parent = span.parent
    out: dict[str, Any] = {
        "name": span.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "kind": _KIND[span.kind],
        "start": span.start_time,
        "end": span.end_time,
        "status": _STATUS[span.status.status_code],
        "attributes": span.attributes,
        "service": span.service,
    }
    return _with_events(span, out)


def span_to_dict(span: ReadableSpan | SpanRecord) -> dict[str, Any]:
    """One finished span as a JSON-compatible dict (ids in hex, times in nanoseconds)."""
    if type(span) is SpanRecord:
        return _record_to_dict(span)
    ctx = span.get_span_context()
    parent = span.parent
    out: dict[str, Any] = {
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x") if ctx is not None else None,
        "span_id": format(ctx.span_id, "016x") if ctx is not None else None,
        "parent_id": format(parent.span_id, "016x") if parent is not None else None,
        "kind": span.kind.name,
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "service": span.resource.attributes.get("service.name"),
    }
    return _with_events(span, out)


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON line per finished span to a file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan | SpanRecord]) -> SpanExportResult:
        return self.write("".join([span_line(s) for s in spans]))

    def write(self, lines: str) -> SpanExportResult:
        """Append already formatted lines (see :func:`span_line`)."""
        with self._lock:
            if self._file is None:
                return SpanExportResult.FAILURE
            self._file.write(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class BufferedSpanProcessor(SpanProcessor):
    """Collects finished spans and exports them in batches on the thread that ends them.

    For cheap local exporters (a file): no background thread, no hand-off per span — a
    batch of ``batch_size`` spans is written in one go, so memory stays bounded however
    long the run. For a :class:`JsonLinesSpanExporter` the buffer holds each span's line,
    formatted as the span ends (plain strings: nothing for the garbage collector to walk).
    Spans still buffered are written on :meth:`force_flush` and :meth:`shutdown`.
    """

    def __init__(self, exporter: SpanExporter, batch_size: int = 512) -> None:
        self.exporter = exporter
        self.batch_size = batch_size
        self._lines = exporter if isinstance(exporter, JsonLinesSpanExporter) else None
        self._buffer: list[Any] = []
        self._lock = threading.Lock()

    @property
    def buffered(self) -> int:
        """How many finished spans wait to be written."""
        return len(self._buffer)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            self.on_record(span)

    def on_record(self, span: ReadableSpan | SpanRecord) -> None:
        """Buffer a finished span (agentplex's own records come here as they are)."""
        item = span_line(span) if self._lines is not None else span
        with self._lock:
            self._buffer.append(item)
            if len(self._buffer) < self.batch_size:
                return
            batch, self._buffer = self._buffer, []
        self._export(batch)

    def add_line(self, line: str) -> None:
        """Buffer a span that is already a JSON line (without its newline), such as one
        another process journaled; only for a :class:`JsonLinesSpanExporter`."""
        if self._lines is None:
            return
        with self._lock:
            self._buffer.append(line + "\n")
            if len(self._buffer) < self.batch_size:
                return
            batch, self._buffer = self._buffer, []
        self._export(batch)

    def _export(self, batch: list[Any]) -> None:
        if self._lines is not None:
            self._lines.write("".join(batch))
        else:  # an SDK exporter: it wants SDK spans
            self.exporter.export([s.readable() if type(s) is SpanRecord else s for s in batch])

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            self._export(batch)
        return True

    def shutdown(self) -> None:
        self.force_flush()
        self.exporter.shutdown()
