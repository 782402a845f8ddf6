"""What :meth:`ChatModelBase.__call__` does around a provider's call when someone watches.

One ``chat {model}`` span per call, and the GenAI metrics when a meter provider is
installed; inside an experiment, the call's usage is counted (in the totals and the cost
ledger: per model, round and agent class, with a local model's device seconds) and its
response recorded — or, when the experiment replays a recorded run, the recorded
response (or the recorded failure) is returned without calling the provider. Failures are
recorded too, so that retries and fallbacks take the same path on replay.
"""

from __future__ import annotations

import builtins
import time
import weakref
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..message import Msg
from ..tracing import LOCAL_PROVIDERS, Run, active_run, content_capture, current_round
from ..tracing.lowlevel import (
    DeviceClock,
    content_attribute,
    current_actor,
    current_actor_class,
    end_span,
    metrics_enabled,
    record_call,
    request_digest,
    request_json,
    request_key,
    start_chat_span,
    use_span,
)
from . import _errors
from ._response import ChatResponse, ChatUsage

if TYPE_CHECKING:
    from ._base import ChatModelBase, ChatResult, Messages, ToolChoice

__all__ = ["counted_by_caller", "device_kind", "instrumented_call", "request_payload"]

_counted_elsewhere: ContextVar[bool] = ContextVar("agentplex_counted_elsewhere", default=False)


@contextmanager
def counted_by_caller() -> Iterator[None]:
    """Model calls started in this block are traced but not counted or recorded by this
    process's experiment: the caller that asked for them (a ``RemoteChatModel``) counts,
    records and replays them, so one call is one count wherever the model runs."""
    token = _counted_elsewhere.set(True)
    try:
        yield
    finally:
        _counted_elsewhere.reset(token)

_PARAMETERS = ("temperature", "top_p", "top_k", "max_tokens", "max_new_tokens", "seed",
               "stop_sequences", "frequency_penalty", "presence_penalty")
_ERROR_ATTRIBUTES = ("provider", "model", "status_code", "retryable", "retry_after", "raw")


def request_payload(call: dict[str, Any]) -> dict[str, Any]:
    """A JSON-able description of a model request (message ids and times left out)."""
    out: dict[str, Any] = {}
    for key, value in call.items():
        if key == "messages":
            value = [m.model_dump(mode="json", include={"name", "role", "content"})
                     if isinstance(m, Msg) else m for m in value]
        elif isinstance(value, type) and issubclass(value, BaseModel):
            value = {"model": value.__name__, "schema": _schema(value)}
        out[key] = value
    return out


_schemas: weakref.WeakKeyDictionary[type[BaseModel], dict[str, Any]] = (
    weakref.WeakKeyDictionary())
_encoded: weakref.WeakKeyDictionary[type[BaseModel], str] = weakref.WeakKeyDictionary()
_MARK = "\x00agentplex structured model\x00"
_MARK_JSON = request_json(_MARK)


def _schema(cls: type[BaseModel]) -> dict[str, Any]:
    """``cls``'s JSON schema, built once per class (building it costs milliseconds, and
    every structured call of an experiment needs it for its request key)."""
    schema = _schemas.get(cls)
    if schema is None:
        schema = _schemas[cls] = cls.model_json_schema()
    return schema


def _request_key(model: str, payload: dict[str, Any],
                 structured_model: type[BaseModel] | None) -> str:
    """``request_key(model, [current_actor(), payload])``, with the structured model's part
    encoded once per class and spliced in (the same text, a fraction of the work)."""
    if structured_model is None:
        return request_key(model, [current_actor(), payload])
    text = request_json([model, [current_actor(), {**payload, "structured_model": _MARK}]])
    if text.count(_MARK_JSON) != 1:  # the request's own text holds the mark too
        return request_key(model, [current_actor(), payload])
    part = _encoded.get(structured_model)
    if part is None:
        part = _encoded[structured_model] = request_json(payload["structured_model"])
    return request_digest(text.replace(_MARK_JSON, part))


async def instrumented_call(
    model: ChatModelBase,
    messages: Messages,
    tools: list[dict[str, Any]] | None,
    tool_choice: ToolChoice | None,
    structured_model: type[BaseModel] | None,
    kwargs: dict[str, Any],
) -> ChatResult:
    """Run ``model._call`` in a ``chat`` span; inside an experiment, count, record or replay."""
    run = None if _counted_elsewhere.get() else active_run()
    attrs = {f"gen_ai.request.{k}": v for k, v in kwargs.items()
             if k in _PARAMETERS and isinstance(v, (int, float, str))} if kwargs else {}
    span = start_chat_span(model.model_name, model.provider, **attrs)
    recording = span.is_recording()
    metered = metrics_enabled()
    if run is None and not recording and not metered:  # nothing to note
        with use_span(span):
            return await model._call(messages, tools, tool_choice, structured_model, **kwargs)
    capture = recording and content_capture() != "off"
    payload: dict[str, Any] = {}
    if run is not None or capture:
        call: dict[str, Any] = {"messages": messages}
        if tools is not None:
            call["tools"] = tools
        if tool_choice is not None:
            call["tool_choice"] = tool_choice
        if structured_model is not None:
            call["structured_model"] = structured_model
        payload = request_payload(call | kwargs)
    if capture:
        captured = content_attribute(payload.get("messages"))
        if captured is not None:
            span.set_attribute("gen_ai.input.messages", captured)
    # Keyed by the asking actor too: concurrent agents may send identical requests, and
    # each must get its own recorded answer back.
    key = _request_key(model.model_name, payload, structured_model) if run is not None else ""
    if run is not None:
        run.model_used(model.provider, model.model_name, model.settings)
    watch = _Watch(model, span, run, key, metered)
    try:
        if run is not None and run.replaying:
            result: ChatResult = _replayed(run.replayed_response(key),
                                           bool(kwargs.get("stream", model.stream)))
        else:
            with use_span(span):
                result = await model._call(messages, tools, tool_choice, structured_model,
                                           **kwargs)
    except Exception as exc:
        _failed(watch, [], exc)
        raise
    except BaseException as exc:
        watch.stop(exc)
        end_span(span, exc)
        raise
    if isinstance(result, ChatResponse):
        _finish(watch, [result])
        return result
    return _watch_stream(result, watch)


_clocks: dict[tuple[str, str], tuple[DeviceClock, bool]] = {}
"""Per local model (provider, name) in this process: its device clock, and whether it is a
GPU."""
_GPU_TYPES = frozenset({"cuda", "mps", "xpu", "hip"})


def device_kind(model: ChatModelBase) -> str:
    """``"gpu"`` or ``"cpu"``: where a local model computes. A model may say so itself
    (a ``device_kind`` attribute); MLX runs on the GPU; a Transformers model is asked for
    its torch device."""
    kind = getattr(model, "device_kind", None)
    if kind in ("cpu", "gpu"):
        return str(kind)
    if model.provider == "mlx":
        return "gpu"
    loaded = getattr(getattr(model, "_shared", None), "loaded", None)
    device = getattr(getattr(loaded, "model", None), "device", None)
    return "gpu" if getattr(device, "type", None) in _GPU_TYPES else "cpu"


class _Watch:
    """One call being watched: where its figures go, when it started, its device clock."""

    __slots__ = ("clock", "gpu", "key", "metered", "model", "run", "share", "span", "started")

    def __init__(self, model: ChatModelBase, span: Any, run: Run | None, key: str,
                 metered: bool) -> None:
        self.model = model
        self.span = span
        self.run = run
        self.key = key
        self.metered = metered
        self.started = time.perf_counter() if metered else 0.0
        self.clock: DeviceClock | None = None
        self.gpu = False
        self.share = 0.0
        # a local model's device time (not a cluster's model actor's: its device is in
        # another process, which does not count the call; a replay calls no model)
        if run is not None and not run.replaying and model.provider in LOCAL_PROVIDERS \
                and model.provider != "agentplex-remote":
            name = (model.provider, model.model_name)
            known = _clocks.get(name)
            if known is None:
                known = _clocks[name] = (DeviceClock(), device_kind(model) == "gpu")
            self.clock, self.gpu = known
            self.share = known[0].start()

    def stop(self, error: BaseException | None, last: ChatResponse | None = None) -> float:
        """The call ended: record its metrics; return its share of the device's time."""
        share = 0.0
        if self.clock is not None:
            share = self.clock.stop(self.share)
            self.clock = None
        if self.metered:
            self.metered = False
            usage = last.usage if last is not None else None
            record_call(self.model.provider, self.model.model_name, current_actor(),
                        time.perf_counter() - self.started,
                        usage.input_tokens if usage is not None else None,
                        usage.output_tokens if usage is not None else None, error)
        return share


def _replayed(recorded: Any, stream: bool) -> ChatResult:
    """A recorded answer: a list of chunks, or ``{"chunks": [...], "error": {...}}``."""
    failure = recorded.get("error") if isinstance(recorded, dict) else None
    raw = recorded.get("chunks", []) if isinstance(recorded, dict) else recorded
    chunks = [ChatResponse.model_validate(c) for c in raw]
    if failure is not None and (not stream or not chunks):
        raise _rebuilt(failure)
    if not stream:
        return chunks[-1]

    async def replay() -> AsyncGenerator[ChatResponse, None]:
        for chunk in chunks:
            yield chunk
        if failure is not None:
            raise _rebuilt(failure)

    return replay()


def _described(exc: Exception) -> dict[str, Any]:
    """A JSON-able description of a failed call, enough to raise it again on replay."""
    attrs = {a: getattr(exc, a) for a in _ERROR_ATTRIBUTES if hasattr(exc, a)}
    return {"type": type(exc).__name__, "message": str(exc), "attributes": attrs}


def _rebuilt(failure: dict[str, Any]) -> Exception:
    """The recorded failure as an exception of the same class (a model error or builtin)."""
    name, message = str(failure.get("type", "")), str(failure.get("message", ""))
    cls = getattr(_errors, name, None) or getattr(builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = _errors.ModelError
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    for attr, value in (failure.get("attributes") or {}).items():
        if attr in _ERROR_ATTRIBUTES:
            setattr(exc, attr, value)
    return exc


async def _watch_stream(
    stream: AsyncGenerator[ChatResponse, None], call: _Watch
) -> AsyncGenerator[ChatResponse, None]:
    chunks: list[ChatResponse] = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
            yield chunk
    except Exception as exc:
        _failed(call, chunks, exc)
        raise
    except BaseException as exc:  # closed early by its consumer, or cancelled
        run = call.run
        if run is not None and run.recording and chunks:
            run.record_response_json(call.key, _dumped(chunks))
        call.stop(exc)
        end_span(call.span, exc)
        raise
    finally:
        await stream.aclose()
    _finish(call, chunks)


def _defaults(model: type[BaseModel], random: tuple[str, ...] = ()) -> dict[str, Any]:
    """``model``'s fields that have a fixed default, with it."""
    made = model()
    return {k: getattr(made, k) for k in type(made).model_fields if k not in random}


_RESPONSE_DEFAULTS = _defaults(ChatResponse, ("id", "created_at"))
_USAGE_DEFAULTS = _defaults(ChatUsage)


def _compact_exclude(chunk: ChatResponse) -> dict[str, Any]:
    """The fields of ``chunk`` (and of its usage) that hold their default."""
    out: dict[str, Any] = {k: True for k, d in _RESPONSE_DEFAULTS.items()
                           if getattr(chunk, k) == d}
    usage = chunk.usage
    if usage is not None:
        same = {k for k, d in _USAGE_DEFAULTS.items() if getattr(usage, k) == d}
        if same:
            out["usage"] = same
    return out


def compact_chunk(chunk: ChatResponse) -> dict[str, Any]:
    """``chunk`` as JSON-able data without the fields that hold their default (a
    recording's line; ``ChatResponse.model_validate`` gives the same response back)."""
    return chunk.model_dump(mode="json", exclude=_compact_exclude(chunk))


def _dumped(chunks: list[ChatResponse]) -> str:
    """The chunks as one compact JSON array (see :func:`compact_chunk`), each encoded by
    pydantic (no dicts built in between)."""
    return f"[{','.join([c.model_dump_json(exclude=_compact_exclude(c)) for c in chunks])}]"


def _failed(call: _Watch, chunks: list[ChatResponse], exc: Exception) -> None:
    run = call.run
    if run is not None and run.recording:
        run.record_response(call.key, {"chunks": [compact_chunk(c) for c in chunks],
                                       "error": _described(exc)})
    call.stop(exc)
    end_span(call.span, exc)


def _finish(call: _Watch, chunks: list[ChatResponse]) -> None:
    span, run, key = call.span, call.run, call.key
    last = chunks[-1] if chunks else None
    device_s = call.stop(None, last)
    if last is not None and span.is_recording():
        usage = last.usage
        attrs: dict[str, Any] = {"gen_ai.response.id": last.id}
        if last.finish_reason:
            attrs["gen_ai.response.finish_reasons"] = [last.finish_reason]
        if usage is not None:
            attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
            attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
        if content_capture() != "off":
            attrs["gen_ai.output.messages"] = content_attribute(
                [b.model_dump(mode="json") for b in last.content])
        span.set_attributes(attrs)
    if run is not None and last is not None:
        usage = last.usage
        model = call.model
        inputs, outputs = (usage.input_tokens, usage.output_tokens) if usage else (0, 0)
        run.count(inputs, outputs)
        cls = current_actor_class()
        gpu = call.gpu
        run.charge(model.provider, model.model_name, current_round(),
                   cls.__name__ if cls is not None else None, inputs, outputs,
                   usage.cached_input_tokens if usage else 0,
                   usage.cache_creation_input_tokens if usage else 0,
                   0.0 if gpu else device_s, device_s if gpu else 0.0)
        if run.recording:
            run.record_response_json(key, _dumped(chunks))
    end_span(span)
