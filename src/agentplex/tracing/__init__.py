"""OpenTelemetry for agentplex: span helpers, exporters, experiments.

Everything in agentplex opens spans through these helpers, so span names and attributes
follow one convention (the OpenTelemetry GenAI semantic conventions) and cost next to
nothing while no tracer provider is configured.
"""

from ._content import ContentCapture, content_attribute, content_capture, set_content_capture
from ._exporters import BufferedSpanProcessor, JsonLinesSpanExporter, span_to_dict
from ._report import SpanNode, find_run, list_runs, load_spans, render_html, span_tree
from ._run import (
    ReplayMissing,
    Run,
    active_run,
    experiment,
    observe,
    request_key,
    transcribe,
)
from ._setup import SpanDispatcher, configure_tracing, dispatcher, exporters_from_env
from ._spans import (
    agent_span,
    chat_span,
    current_actor,
    end_span,
    extract_context,
    inject_context,
    is_enabled,
    receive_context,
    send_headers,
    set_current_actor,
    start_chat_span,
    tool_span,
    use_context,
    use_span,
)

__all__ = [
    "BufferedSpanProcessor",
    "ContentCapture",
    "JsonLinesSpanExporter",
    "ReplayMissing",
    "Run",
    "SpanDispatcher",
    "SpanNode",
    "active_run",
    "agent_span",
    "chat_span",
    "configure_tracing",
    "current_actor",
    "content_attribute",
    "content_capture",
    "dispatcher",
    "end_span",
    "experiment",
    "exporters_from_env",
    "extract_context",
    "find_run",
    "inject_context",
    "is_enabled",
    "list_runs",
    "load_spans",
    "observe",
    "receive_context",
    "render_html",
    "request_key",
    "send_headers",
    "set_content_capture",
    "set_current_actor",
    "span_to_dict",
    "span_tree",
    "start_chat_span",
    "tool_span",
    "transcribe",
    "use_context",
    "use_span",
]
