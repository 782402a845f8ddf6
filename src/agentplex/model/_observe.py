"""What happens around every model call when someone is watching: a ``chat`` span, and
inside an experiment, usage totals plus recording (or replaying) of the response."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..message import Msg
from ..tracing import (
    Run,
    active_run,
    content_attribute,
    current_actor,
    end_span,
    request_key,
    start_chat_span,
    use_span,
)
from ._response import ChatResponse

if TYPE_CHECKING:
    from ._base import ChatModelBase, ChatResult

__all__ = ["observed_call", "request_payload"]

_PARAMETERS = ("temperature", "top_p", "top_k", "max_tokens", "max_new_tokens", "seed",
               "stop_sequences", "frequency_penalty", "presence_penalty")


def request_payload(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A JSON-able description of a model request (message ids and times left out)."""
    names = ("messages", "tools", "tool_choice", "structured_model")
    call = dict(zip(names, args, strict=False)) | kwargs
    out: dict[str, Any] = {}
    for key, value in call.items():
        if key == "messages":
            value = [m.model_dump(mode="json", include={"name", "role", "content"})
                     if isinstance(m, Msg) else m for m in value]
        elif isinstance(value, type) and issubclass(value, BaseModel):
            value = {"model": value.__name__, "schema": value.model_json_schema()}
        out[key] = value
    return out


async def observed_call(
    call: Callable[..., Awaitable[ChatResult]],
    model: ChatModelBase,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> ChatResult:
    """Run ``call`` in a ``chat`` span; inside an experiment, count, record or replay it."""
    run = active_run()
    payload = request_payload(args, kwargs)
    attrs = {f"gen_ai.request.{k}": v for k, v in kwargs.items()
             if k in _PARAMETERS and isinstance(v, (int, float, str))}
    span = start_chat_span(model.model_name, model.provider, **attrs)
    captured = content_attribute(payload.get("messages"))
    if captured is not None:
        span.set_attribute("gen_ai.input.messages", captured)
    # Keyed by the asking actor too: concurrent agents may send identical requests, and
    # each must get its own recorded answer back.
    key = request_key(model.model_name, [current_actor(), payload]) if run is not None else ""
    if run is not None:
        run.model_used(model.provider, model.model_name)
    try:
        if run is not None and run.replaying:
            recorded = run.replayed_response(key)
            result: ChatResult = _replayed(recorded, model.stream)
        else:
            with use_span(span):
                result = await call(model, *args, **kwargs)
    except BaseException as exc:
        end_span(span, exc)
        raise
    if isinstance(result, ChatResponse):
        _finish(span, run, key, [result])
        return result
    return _watch_stream(result, span, run, key)


def _replayed(recorded: Any, stream: bool) -> ChatResult:
    chunks = [ChatResponse.model_validate(c) for c in recorded]
    if not stream:
        return chunks[-1]

    async def replay() -> AsyncGenerator[ChatResponse, None]:
        for chunk in chunks:
            yield chunk

    return replay()


async def _watch_stream(
    stream: AsyncGenerator[ChatResponse, None], span: Any, run: Run | None, key: str
) -> AsyncGenerator[ChatResponse, None]:
    chunks: list[ChatResponse] = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
            yield chunk
    except BaseException as exc:
        end_span(span, exc)
        raise
    finally:
        await stream.aclose()
    _finish(span, run, key, chunks)


def _finish(span: Any, run: Run | None, key: str, chunks: list[ChatResponse]) -> None:
    last = chunks[-1] if chunks else None
    if last is not None:
        span.set_attribute("gen_ai.response.id", last.id)
        if last.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [last.finish_reason])
        if last.usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", last.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", last.usage.output_tokens)
        captured = content_attribute([b.model_dump(mode="json") for b in last.content])
        if captured is not None:
            span.set_attribute("gen_ai.output.messages", captured)
    if run is not None and last is not None:
        usage = last.usage
        run.count(usage.input_tokens if usage else 0, usage.output_tokens if usage else 0)
        if not run.replaying:
            run.record_response(key, [c.model_dump(mode="json") for c in chunks])
    end_span(span)
