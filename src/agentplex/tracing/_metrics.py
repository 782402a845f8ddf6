"""The OpenTelemetry GenAI client metrics of model calls.

Every model call records ``gen_ai.client.operation.duration`` (seconds) and, when the
response says how many tokens it used, ``gen_ai.client.token.usage`` (once with
``gen_ai.token.type`` = ``input``, once ``output``), with ``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, the asking agent's
``gen_ai.agent.name`` and, for a failed call, ``error.type`` — through the OpenTelemetry
metrics API, so whatever ``MeterProvider`` is installed (yours, or
:func:`configure_metrics`'s) exports them. With none installed a call pays one check.
Metrics are not sampled: every call counts, whatever traces keep.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import Histogram, NoOpMeterProvider
from opentelemetry.metrics import _internal as _metrics_api

from ._otlp import otlp_for

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider

__all__ = [
    "OPERATION_DURATION",
    "TOKEN_USAGE",
    "configure_metrics",
    "metrics_enabled",
    "record_call",
]

TOKEN_USAGE = "gen_ai.client.token.usage"
OPERATION_DURATION = "gen_ai.client.operation.duration"
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                  16777216, 67108864)
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                     20.48, 40.96, 81.92)
"""The bucket boundaries the GenAI semantic conventions advise."""

_PROVIDER_FROM_ENV = "OTEL_PYTHON_METER_PROVIDER" in os.environ
_cached: tuple[object, Histogram | None, Histogram | None] = (None, None, None)


def _instruments() -> tuple[Histogram | None, Histogram | None]:
    """The two histograms of the installed meter provider (``None``: none installed)."""
    global _cached
    provider = _metrics_api._METER_PROVIDER
    if provider is None:
        if not _PROVIDER_FROM_ENV:
            return None, None
        provider = metrics.get_meter_provider()
    if provider is not _cached[0]:
        if isinstance(provider, (NoOpMeterProvider, _metrics_api._ProxyMeterProvider)):
            _cached = (provider, None, None)
        else:
            meter = provider.get_meter("agentplex")
            _cached = (provider,
                       meter.create_histogram(
                           TOKEN_USAGE, unit="{token}",
                           description="Number of input and output tokens used.",
                           explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS),
                       meter.create_histogram(
                           OPERATION_DURATION, unit="s", description="GenAI operation duration.",
                           explicit_bucket_boundaries_advisory=_DURATION_BUCKETS))
    return _cached[1], _cached[2]


def metrics_enabled() -> bool:
    """Whether a meter provider is installed (so model calls record metrics): cheap."""
    if _metrics_api._METER_PROVIDER is None and not _PROVIDER_FROM_ENV:
        return False
    return _instruments()[0] is not None


def record_call(provider: str | None, model: str, agent: str | None, duration_s: float,
                input_tokens: int | None, output_tokens: int | None,
                error: BaseException | None = None) -> None:
    """Record one ``chat`` call's metrics (token counts ``None``: unknown, not recorded)."""
    tokens, duration = _instruments()
    if tokens is None or duration is None:
        return
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model}
    if provider is not None:
        attrs["gen_ai.provider.name"] = provider
    if agent is not None:
        attrs["gen_ai.agent.name"] = agent
    if error is not None:
        duration.record(duration_s, {**attrs, "error.type": type(error).__qualname__})
        return
    duration.record(duration_s, attrs)
    if input_tokens is not None:
        tokens.record(input_tokens, {**attrs, "gen_ai.token.type": "input"})
    if output_tokens is not None:
        tokens.record(output_tokens, {**attrs, "gen_ai.token.type": "output"})


def configure_metrics(readers: Sequence[Any] = (), *, otlp: bool | None = None,
                      interval_s: float = 60.0) -> MeterProvider:
    """Install an SDK ``MeterProvider`` with ``readers`` and, when ``otlp`` (default:
    ``OTEL_METRICS_EXPORTER`` names ``otlp``), a periodic OTLP exporter every
    ``interval_s`` (protocol and endpoint from the standard ``OTEL_EXPORTER_OTLP_*``
    variables; install ``agentplex[otlp]``). Returns the provider (``shutdown()`` it at
    exit to send the last figures). The API takes one provider per process: if one is
    installed already, add your readers to that one instead."""
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    chosen = list(readers)
    if otlp is None:
        otlp = "otlp" in [n.strip() for n in os.environ.get("OTEL_METRICS_EXPORTER", "")
                          .split(",")]
    if otlp:
        chosen.append(PeriodicExportingMetricReader(otlp_metric_exporter(),
                                                    export_interval_millis=interval_s * 1000))
    provider = SdkMeterProvider(metric_readers=chosen)
    metrics.set_meter_provider(provider)  # once per process: the API keeps the first
    return provider


def otlp_metric_exporter(protocol: str | None = None, **kwargs: Any) -> Any:
    """An OTLP metric exporter over gRPC or HTTP, configured by the ``OTEL_*`` variables."""
    return otlp_for("metrics", protocol, **kwargs)
