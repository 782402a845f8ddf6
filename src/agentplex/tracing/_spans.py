"""Span helpers: ``invoke_agent {name}``, ``chat {model}``, ``execute_tool {name}``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER

from ._context import attach, current_span, detach, with_span
from ._ledger import round_from_headers, round_to_headers
from ._recorder import DroppedSpan, SpanRecord
from ._run import count_tool_call, join_run, outgoing_run
from ._setup import recorder

__all__ = [
    "agent_span",
    "chat_span",
    "current_actor",
    "current_actor_class",
    "end_span",
    "extract_context",
    "inject_context",
    "is_enabled",
    "receive_context",
    "send_headers",
    "set_current_actor",
    "sim_span",
    "start_chat_span",
    "tool_span",
    "use_context",
    "use_span",
    "would_record",
]

_TRACER_NAME = "agentplex"
_PROVIDER_FROM_ENV = OTEL_PYTHON_TRACER_PROVIDER in os.environ

_CLIENT = trace.SpanKind.CLIENT

_actor: ContextVar[str | None] = ContextVar("agentplex_actor", default=None)
_actor_class: ContextVar[type | None] = ContextVar("agentplex_actor_class", default=None)


def set_current_actor(name: str | None, cls: type | None = None) -> None:
    """Called by the runtime in an actor's task: who is running (see :func:`current_actor`)
    and its class (see :func:`current_actor_class`)."""
    _actor.set(name)
    _actor_class.set(cls)


def current_actor() -> str | None:
    """The name of the actor whose handler is running in this task, if any."""
    return _actor.get()


def current_actor_class() -> type | None:
    """The class of the actor whose handler is running in this task, if any (the cost
    ledger's "agent class")."""
    return _actor_class.get()


_NULL: AbstractContextManager[None] = nullcontext()


def is_enabled() -> bool:
    """Whether a real tracer provider is installed (so spans are worth creating).

    Called on every message, so it must be cheap: while no provider is set it reads one
    module global (the API's own ``get_tracer_provider`` re-reads the environment then).
    """
    global _checked
    provider = trace._TRACER_PROVIDER
    if provider is None:
        if _PROVIDER_FROM_ENV:  # the API loads that provider on first use; let it
            provider = trace.get_tracer_provider()
        else:
            return False
    if provider is not _checked[0]:  # the provider is set once: check its type once
        _checked = (provider, not isinstance(
            provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)))
    return _checked[1]


_checked: tuple[object, bool] = (None, False)


def would_record() -> bool:
    """Whether a span started here could record: false while tracing is off, and inside a
    trace sampled out at its root when agentplex's sampler follows parents (every span of
    it is dropped, so instrumentation may skip its work outright)."""
    if trace._TRACER_PROVIDER is None and not _PROVIDER_FROM_ENV:  # off: as is_enabled()
        return False
    rec = recorder()
    if rec is None:
        return is_enabled()
    return type(current_span()) is not DroppedSpan or not rec.sampler.parent_based


_cached: tuple[trace.TracerProvider, trace.Tracer] | None = None


def _tracer() -> trace.Tracer:
    """agentplex's tracer: its own lean recorder when the provider is agentplex's, else
    the installed provider's tracer (cached per provider: the SDK's ``get_tracer`` is slow)."""
    rec = recorder()
    if rec is not None:
        return rec
    global _cached
    provider = trace.get_tracer_provider()
    if _cached is None or _cached[0] is not provider:
        _cached = (provider, provider.get_tracer(_TRACER_NAME))
    return _cached[1]


class _Scope:
    """Makes a span current for a block, then ends it (recording the block's error)."""

    __slots__ = ("_token", "span")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self._token: object = None

    def __enter__(self) -> trace.Span:
        span = self.span
        self._token = attach(with_span(span))
        return span

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: object) -> None:
        detach(self._token)
        span = self.span
        if type(span) is SpanRecord:
            if error is not None:
                _record_error(span, error)
            span.end()
        elif type(span) is not DroppedSpan and span.is_recording():  # another tracer's
            end_span(span, error)


def _scope(span: trace.Span) -> AbstractContextManager[trace.Span | None]:
    """The block's scope for a new ``span``: none at all when ``span`` is the current span
    standing in for a dropped child (nothing to make current, nothing to end)."""
    return _NULL if span is current_span() else _Scope(span)


def _start(name: str, kind: trace.SpanKind, attributes: Callable[[], dict[str, Any]],
           parent: otel_context.Context | None = None) -> trace.Span:
    """Start a span; ``attributes`` is called only for a span that records."""
    rec = recorder()
    if rec is None:
        attrs = {k: v for k, v in attributes().items() if v is not None}
        return _tracer().start_span(name, context=parent, kind=kind, attributes=attrs)
    span = rec.start(name, parent, kind)
    if type(span) is SpanRecord:
        span.attributes = {k: v for k, v in attributes().items() if v is not None}
    return span


def agent_span(
    agent_name: str, agent_id: str | None = None, **attributes: Any
) -> AbstractContextManager[trace.Span | None]:
    """Span ``invoke_agent {agent_name}`` around one reply; a no-op when tracing is off."""
    rec = recorder()
    if rec is not None:  # inline: the path every reply takes
        parent = current_span()
        if type(parent) is DroppedSpan and rec.sampler.parent_based:  # nothing to record
            return _NULL
        span = rec.child(parent, f"invoke_agent {agent_name}")
        if type(span) is SpanRecord:
            attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent_name}
            if agent_id is not None:
                attrs["gen_ai.agent.id"] = agent_id
            if attributes:
                attrs.update((k, v) for k, v in attributes.items() if v is not None)
            span.attributes = attrs
        return _Scope(span)
    if not is_enabled():
        return _NULL
    return _scope(_start(f"invoke_agent {agent_name}", trace.SpanKind.INTERNAL, lambda: {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": agent_name,
        "gen_ai.agent.id": agent_id,
        **attributes,
    }))


def chat_span(
    model: str, provider: str | None = None, **attributes: Any
) -> AbstractContextManager[trace.Span | None]:
    """Span ``chat {model}`` around one model call; a no-op when tracing is off."""
    if not would_record():
        return _NULL
    return _scope(start_chat_span(model, provider, **attributes))


def tool_span(
    tool_name: str, call_id: str | None = None, **attributes: Any
) -> AbstractContextManager[trace.Span | None]:
    """Span ``execute_tool {tool_name}`` around one tool call (counted in the running
    experiment's totals); a no-op when tracing is off."""
    count_tool_call()
    if not would_record():
        return _NULL
    return _scope(_start(f"execute_tool {tool_name}", trace.SpanKind.INTERNAL, lambda: {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool_name,
        "gen_ai.tool.call.id": call_id,
        **attributes,
    }))


def sim_span(name: str, **attributes: Any) -> AbstractContextManager[trace.Span | None]:
    """Span ``name`` around a part of a simulation run (a round, an intervention, a survey,
    a checkpoint); a no-op when tracing is off."""
    if not would_record():
        return _NULL
    return _scope(_start(name, trace.SpanKind.INTERNAL, lambda: attributes))


def start_chat_span(model: str, provider: str | None = None, **attributes: Any) -> trace.Span:
    """Start (without making it current) a ``chat {model}`` span; end it with :func:`end_span`.

    For calls whose result outlives the call itself, such as a streamed response. The span
    does not record (``is_recording()`` is false) when its trace is sampled out.
    """
    rec = recorder()
    if rec is None:
        return _start(f"chat {model}", _CLIENT, lambda: {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            **attributes,
        })
    span = rec.child(current_span(), f"chat {model}", _CLIENT)  # inline: every model call
    if type(span) is SpanRecord:
        attrs: dict[str, Any] = {"gen_ai.operation.name": "chat",
                                 "gen_ai.provider.name": provider, "gen_ai.request.model": model}
        if provider is None:
            del attrs["gen_ai.provider.name"]
        if attributes:
            attrs.update((k, v) for k, v in attributes.items() if v is not None)
        span.attributes = attrs
    return span


class use_span:
    """Make ``span`` current for the body without ending it."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._token: object = None

    def __enter__(self) -> trace.Span:
        span = self._span
        if span is not current_span():
            self._token = attach(with_span(span))
        return span

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            detach(self._token)


def end_span(span: trace.Span, error: BaseException | None = None) -> None:
    """End ``span``, recording ``error`` (if any) as its status."""
    if error is not None and span.is_recording():
        _record_error(span, error)
    span.end()


def _record_error(span: trace.Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def _messaging_span(operation: str, destination: str, kind: trace.SpanKind,
                    parent: otel_context.Context | None, attributes: Mapping[str, Any]
                    ) -> trace.Span:
    return _start(f"{operation} {destination}", kind, lambda: {
        "messaging.system": "agentplex", "messaging.operation.type": operation,
        "messaging.operation.name": operation, "messaging.destination.name": destination,
        **attributes}, parent)


def send_headers(destination: str, parent: otel_context.Context | None, **attributes: Any
                 ) -> dict[str, str] | None:
    """Record a ``send {destination}`` PRODUCER span (a child of ``parent``) for a message
    leaving this process, and return the headers that carry it — with the trace's
    ``sampled`` flag, so the receiving process keeps or drops what this one did; ``None``
    when off."""
    if not is_enabled():
        return None
    span = _messaging_span("send", destination, trace.SpanKind.PRODUCER, parent, attributes)
    span.end()
    headers: dict[str, str] = {}
    propagate.inject(headers, context=trace.set_span_in_context(span, parent))
    outgoing_run(headers, current_actor())
    round_to_headers(headers, parent)
    return headers


def receive_context(destination: str, headers: Mapping[str, str] | None, **attributes: Any
                    ) -> otel_context.Context | None:
    """Record a ``process {destination}`` CONSUMER span for a message that arrived with
    ``headers``; return the context its handler runs in (``None`` when off or absent)."""
    if not headers:
        return None
    if not is_enabled():
        context = join_run(headers, propagate.extract(headers))
        if not is_enabled():
            return round_from_headers(headers, context)
        # following the run turned tracing on here: this message's span is the first
    parent = propagate.extract(headers)
    span = _messaging_span("process", destination, trace.SpanKind.CONSUMER, parent, attributes)
    span.end()
    return round_from_headers(headers, join_run(headers, trace.set_span_in_context(span, parent)))


def inject_context(carrier: MutableMapping[str, str] | None = None) -> dict[str, str] | None:
    """Return the current trace context as message headers, or ``None`` when tracing is off."""
    if not is_enabled():
        return None
    out: dict[str, str] = dict(carrier or {})
    propagate.inject(out)
    return out or None


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context | None:
    """Rebuild the trace context that :func:`inject_context` put into ``headers``."""
    if not headers:
        return None
    return propagate.extract(headers)


class use_context:
    """Make ``ctx`` (from :func:`extract_context`) current for the body; ``None`` does nothing."""

    __slots__ = ("_ctx", "_token")

    def __init__(self, ctx: otel_context.Context | None) -> None:
        self._ctx = ctx
        self._token: object = None

    def __enter__(self) -> None:
        if self._ctx is not None:
            self._token = attach(self._ctx)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            detach(self._token)
