"""Thin helpers over the OpenTelemetry API.

Everything in agentplex opens spans through these helpers, so span names and attributes
follow one convention (the OpenTelemetry GenAI semantic conventions) and cost next to
nothing while no tracer provider is configured.
"""

from ._exporters import JsonLinesSpanExporter, configure_local_tracing, span_to_dict
from ._spans import (
    agent_span,
    chat_span,
    end_span,
    extract_context,
    inject_context,
    is_enabled,
    start_chat_span,
    tool_span,
    use_context,
    use_span,
)

__all__ = [
    "JsonLinesSpanExporter",
    "configure_local_tracing",
    "span_to_dict",
    "agent_span",
    "chat_span",
    "end_span",
    "extract_context",
    "inject_context",
    "is_enabled",
    "start_chat_span",
    "tool_span",
    "use_context",
    "use_span",
]
