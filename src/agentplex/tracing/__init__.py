"""OpenTelemetry for agentplex: tracing setup, experiments, exporters and run reports.

Everything in agentplex opens spans through one set of helpers (in
:mod:`agentplex.tracing.lowlevel`), so span names and attributes follow one convention (the
OpenTelemetry GenAI semantic conventions) and cost next to nothing while no tracer provider
is configured. This package holds what users call: :func:`configure_tracing`,
:func:`experiment` and its :class:`Run`, content capture, exporters, the cost ledger with
its prices and budgets, the GenAI metrics, and the run reports the ``agentplex runs``
command shows.
"""

from ._budget import Budget
from ._content import ContentCapture, content_capture, set_content_capture
from ._errors import ExportFailed, InvalidBudget, InvalidPrices, NoRecording, ReplayMissing
from ._export import DEFAULT_MLFLOW_URI, export_mlflow
from ._exporters import JsonLinesSpanExporter
from ._incidents import Restore, Rollback, RunIncidents
from ._ledger import Ledger, LedgerEntry, Usage, current_round, in_round, set_round
from ._metrics import configure_metrics
from ._prices import LOCAL_PROVIDERS, PRICES_ENV, Price, Prices, prices, set_prices
from ._report import (
    SpanNode,
    find_run,
    list_runs,
    load_spans,
    page_html,
    render_html,
    run_param,
    select_runs,
    span_tree,
)
from ._run import Run, RunOutcome, active_run, experiment
from ._sampling import TraceSampler
from ._setup import (
    SpanDispatcher,
    configure_tracing,
    dispatcher,
    exporters_from_env,
    otlp_exporter,
    sampler,
)
from ._spans import is_enabled
from ._summary import RunSummary, summarize_run

__all__ = [
    "Budget",
    "ContentCapture",
    "DEFAULT_MLFLOW_URI",
    "ExportFailed",
    "InvalidBudget",
    "InvalidPrices",
    "JsonLinesSpanExporter",
    "LOCAL_PROVIDERS",
    "Ledger",
    "LedgerEntry",
    "NoRecording",
    "PRICES_ENV",
    "Price",
    "Prices",
    "ReplayMissing",
    "Restore",
    "Rollback",
    "Run",
    "RunIncidents",
    "RunOutcome",
    "RunSummary",
    "SpanDispatcher",
    "SpanNode",
    "TraceSampler",
    "Usage",
    "active_run",
    "configure_metrics",
    "configure_tracing",
    "content_capture",
    "current_round",
    "dispatcher",
    "experiment",
    "export_mlflow",
    "exporters_from_env",
    "find_run",
    "in_round",
    "is_enabled",
    "list_runs",
    "load_spans",
    "otlp_exporter",
    "page_html",
    "prices",
    "render_html",
    "run_param",
    "sampler",
    "select_runs",
    "set_content_capture",
    "set_prices",
    "set_round",
    "span_tree",
    "summarize_run",
]
