"""Tracing plumbing for agentplex's own layers and for authors of transports and models.

Span helpers (``invoke_agent``, ``chat``, ``execute_tool`` and the messaging spans of a bus
hop), trace-context propagation through message headers, the actor running in this task,
the experiment hooks that keep a run's transcript, model recording and cost ledger, and the
GenAI metrics of a model call. Users configure tracing and run experiments through
:mod:`agentplex.tracing`; this module is what the runtime, the bus, agents, models and tools
call underneath.
"""

from ._content import content_attribute
from ._context import current_context
from ._exporters import BufferedSpanProcessor, span_to_dict
from ._html import html_page
from ._incidents import index_ranges, names_of
from ._json import dumper
from ._ledger import DeviceClock, Tally, round_from_headers, round_to_headers
from ._metrics import metrics_enabled, otlp_metric_exporter, record_call
from ._report import SWEEP_RECORD
from ._run import (
    RUN_HEADER,
    RunPart,
    add_run_drain,
    answer_headers,
    answer_received,
    collect_parts,
    driving_run,
    record_received,
    remove_run_drain,
    request_digest,
    request_json,
    request_key,
    run_event,
    set_journal_shipper,
    transcribe,
    transcript_until,
)
from ._spans import (
    agent_span,
    chat_span,
    current_actor,
    current_actor_class,
    end_span,
    extract_context,
    inject_context,
    receive_context,
    send_headers,
    set_current_actor,
    sim_span,
    start_chat_span,
    tool_span,
    use_context,
    use_span,
    would_record,
)
from ._spool import SortedSpool
from ._summary import DRIVER
from ._tables import TRANSCRIPT_TABLE, TranscriptTable

__all__ = [
    "BufferedSpanProcessor",
    "DRIVER",
    "DeviceClock",
    "RUN_HEADER",
    "RunPart",
    "SWEEP_RECORD",
    "SortedSpool",
    "TRANSCRIPT_TABLE",
    "Tally",
    "TranscriptTable",
    "add_run_drain",
    "agent_span",
    "answer_headers",
    "answer_received",
    "chat_span",
    "collect_parts",
    "content_attribute",
    "current_actor",
    "current_actor_class",
    "current_context",
    "driving_run",
    "dumper",
    "end_span",
    "extract_context",
    "html_page",
    "index_ranges",
    "inject_context",
    "metrics_enabled",
    "names_of",
    "otlp_metric_exporter",
    "receive_context",
    "record_call",
    "record_received",
    "remove_run_drain",
    "request_digest",
    "request_json",
    "request_key",
    "round_from_headers",
    "round_to_headers",
    "run_event",
    "send_headers",
    "set_current_actor",
    "set_journal_shipper",
    "sim_span",
    "span_to_dict",
    "start_chat_span",
    "tool_span",
    "transcribe",
    "transcript_until",
    "use_context",
    "use_span",
    "would_record",
]
