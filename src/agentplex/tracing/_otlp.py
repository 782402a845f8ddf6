"""OTLP exporters of spans and metrics, over gRPC or HTTP, from the optional exporter
packages (``agentplex[otlp]``)."""

from __future__ import annotations

import importlib
import os
from typing import Any, Literal

_SIGNALS = {"traces": ("trace_exporter", "OTLPSpanExporter"),
            "metrics": ("metric_exporter", "OTLPMetricExporter")}


def otlp_for(signal: Literal["traces", "metrics"], protocol: str | None, **kwargs: Any) -> Any:
    """The OTLP exporter of ``signal``; ``protocol`` (``grpc`` or ``http/protobuf``)
    defaults to ``OTEL_EXPORTER_OTLP_{SIGNAL}_PROTOCOL``, then
    ``OTEL_EXPORTER_OTLP_PROTOCOL``, then ``http/protobuf``."""
    protocol = protocol or os.environ.get(
        f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL",
        os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"))
    transport = {"grpc": "grpc", "http/protobuf": "http", "http": "http"}.get(protocol)
    if transport is None:
        raise ValueError(f"unsupported OTLP protocol {protocol!r} (use grpc or http/protobuf)")
    module, name = _SIGNALS[signal]
    try:
        exporter = getattr(importlib.import_module(
            f"opentelemetry.exporter.otlp.proto.{transport}.{module}"), name)
    except ImportError as exc:
        raise ImportError(
            f"OTLP export needs the OpenTelemetry OTLP exporter: {exc}. "
            "Install it with: pip install 'agentplex[otlp]'") from exc
    return exporter(**kwargs)
