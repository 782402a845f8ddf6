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

__all__ = ["BufferedSpanProcessor", "JsonLinesSpanExporter", "span_to_dict"]


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    """One finished span as a JSON-compatible dict (ids in hex, times in nanoseconds)."""
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
    if span.events:
        out["events"] = [{"name": e.name, "time": e.timestamp,
                          "attributes": dict(e.attributes or {})} for e in span.events]
    return out


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON line per finished span to a file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        dumps = json.dumps
        lines = "".join([dumps(span_to_dict(s), default=str) + "\n" for s in spans])
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
    batch of ``batch_size`` spans is written in one go. Spans still buffered are written on
    :meth:`force_flush` and :meth:`shutdown`.
    """

    def __init__(self, exporter: SpanExporter, batch_size: int = 512) -> None:
        self.exporter = exporter
        self.batch_size = batch_size
        self._buffer: list[ReadableSpan] = []
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context.trace_flags.sampled:
            return
        with self._lock:
            self._buffer.append(span)
            if len(self._buffer) < self.batch_size:
                return
            batch, self._buffer = self._buffer, []
        self.exporter.export(batch)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            self.exporter.export(batch)
        return True

    def shutdown(self) -> None:
        self.force_flush()
        self.exporter.shutdown()
