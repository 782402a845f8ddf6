"""The current OpenTelemetry context, read and set in one step.

The API's ``get_current_span`` / ``attach`` / ``set_span_in_context`` each go through
three or four Python calls to reach one ``ContextVar``; agentplex asks on every message, so
when the API runs on its default contextvars runtime context (it always does unless
``OTEL_PYTHON_CONTEXT`` names another) these go to that ``ContextVar`` directly. The
values are the API's own: ``Context`` objects holding the span under the API's key.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.trace import INVALID_SPAN

__all__ = ["attach", "current_context", "current_span", "detach", "with_span"]

_runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
_var: ContextVar[Context] | None = (
    _runtime._current_context if isinstance(_runtime, ContextVarsRuntimeContext) else None)
_SPAN_KEY: str | None = getattr(trace.propagation, "_SPAN_KEY", None)


if _var is not None and _SPAN_KEY is not None:
    _get = _var.get
    _key = _SPAN_KEY

    def current_span() -> trace.Span:
        """The span current in this task (``INVALID_SPAN`` when none)."""
        # only ever a span there, put by ``set_span_in_context`` or :func:`with_span`
        return _get().get(_key, INVALID_SPAN)  # type: ignore[return-value]

    def with_span(span: trace.Span, context: Context | None = None) -> Context:
        """``context`` (default: the current one) with ``span`` as its current span."""
        values = _get() if context is None else context
        return Context({**values, _key: span})

    current_context: Callable[[], Context] = _get
    attach: Callable[[Context], Token[Context]] = _var.set
    _reset = _var.reset

    def detach(token: Any) -> None:
        """Restore the context from before :func:`attach` (as the API does, a token from
        another task's context — a generator resumed elsewhere — is let go)."""
        try:  # noqa: SIM105 - cheaper than contextlib.suppress on this per-message path
            _reset(token)
        except ValueError:
            pass
else:  # another runtime context: through the API
    current_span = trace.get_current_span
    with_span = trace.set_span_in_context
    current_context = otel_context.get_current
    attach = otel_context.attach
    detach = otel_context.detach
