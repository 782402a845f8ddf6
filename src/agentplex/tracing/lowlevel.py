"""Tracing plumbing for agentplex's own layers and for authors of transports and models.

Span helpers (``invoke_agent``, ``chat``, ``execute_tool`` and the messaging spans of a bus
hop), trace-context propagation through message headers, the actor running in this task,
and the experiment hooks that keep a run's transcript and model recording. Users configure
tracing and run experiments through :mod:`agentplex.tracing`; this module is what the
runtime, the bus, agents, models and tools call underneath.
"""

from ._content import content_attribute
from ._context import current_context
from ._exporters import BufferedSpanProcessor, span_to_dict
from ._incidents import names_of
from ._run import (
    RUN_HEADER,
    RunPart,
    add_run_drain,
    answer_headers,
    answer_received,
    driving_run,
    record_received,
    remove_run_drain,
    request_digest,
    request_json,
    request_key,
    run_event,
    set_journal_shipper,
    transcribe,
)
from ._spans import (
    agent_span,
    chat_span,
    current_actor,
    end_span,
    extract_context,
    inject_context,
    receive_context,
    send_headers,
    set_current_actor,
    start_chat_span,
    tool_span,
    use_context,
    use_span,
    would_record,
)

__all__ = [
    "RUN_HEADER",
    "BufferedSpanProcessor",
    "RunPart",
    "add_run_drain",
    "agent_span",
    "answer_headers",
    "answer_received",
    "chat_span",
    "content_attribute",
    "current_actor",
    "current_context",
    "driving_run",
    "end_span",
    "extract_context",
    "inject_context",
    "names_of",
    "receive_context",
    "record_received",
    "remove_run_drain",
    "request_digest",
    "request_json",
    "request_key",
    "run_event",
    "send_headers",
    "set_journal_shipper",
    "set_current_actor",
    "span_to_dict",
    "start_chat_span",
    "tool_span",
    "transcribe",
    "use_context",
    "use_span",
    "would_record",
]
