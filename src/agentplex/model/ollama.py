"""Ollama's ``/api/chat``: call and formatter (:class:`OllamaChatModel`)."""

from __future__ import annotations

import base64
import contextvars
import itertools
import json
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from ..message import (
    AudioBlock,
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    VideoBlock,
)
from ._errors import ModelError, UnsupportedOptionError
from ._formatting import media_bytes
from ._hosted import HostedChatModel, Request
from ._response import ChatResponse
from ._stream import ResponseBuilder, token_logprobs
from .openai import openai_tools

__all__ = ["OllamaChatModel", "format_ollama_messages"]

_last_error_headers: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "ollama_last_error_headers", default=None)
"""Headers of the last failed response in this task: the ollama client drops them from its
``ResponseError``, so an httpx response hook keeps them for ``Retry-After``."""


async def _keep_error_headers(response: Any) -> None:
    if response.status_code >= 400:
        _last_error_headers.set(dict(response.headers))


def _image(block: ImageBlock, model: str) -> str:
    try:
        return base64.b64encode(media_bytes(block)[1]).decode()
    except ValueError as exc:
        raise UnsupportedOptionError(f"ollama takes inline images only: {exc}",
                                     provider="ollama", model=model) from exc


def format_ollama_messages(
    messages: Sequence[Msg | dict[str, Any]], model: str = "unknown"
) -> list[dict[str, Any]]:
    """Format a history for ``/api/chat``.

    Images travel base64-encoded in ``images`` (URLs would have to be downloaded: an
    error); thinking goes back in ``thinking``; each tool result becomes a ``tool``
    message naming its tool (media in tool results go as that message's ``images``).
    Audio and video raise :class:`UnsupportedOptionError`. Dicts pass unchanged.
    """
    out: list[dict[str, Any]] = []
    for msg in messages:
        if isinstance(msg, dict):
            out.append(dict(msg))
            continue
        texts: list[str] = []
        images: list[str] = []
        thinking: list[str] = []
        calls: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for block in msg.get_content_blocks():
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif isinstance(block, ImageBlock):
                images.append(_image(block, model))
            elif isinstance(block, ThinkingBlock):
                thinking.append(block.thinking)
            elif isinstance(block, ToolUseBlock):
                calls.append({"function": {"name": block.name, "arguments": block.input}})
            elif isinstance(block, ToolResultBlock):
                output = block.output
                result: dict[str, Any] = {"role": "tool", "tool_name": block.name}
                if isinstance(output, str):
                    result["content"] = output
                else:
                    result["content"] = "\n".join(b.text for b in output
                                                  if isinstance(b, TextBlock))
                    result["images"] = [_image(b, model) for b in output
                                        if isinstance(b, ImageBlock)]
                    if any(isinstance(b, (AudioBlock, VideoBlock)) for b in output):
                        raise UnsupportedOptionError("ollama takes no audio or video",
                                                     provider="ollama", model=model)
                results.append(result)
            elif isinstance(block, (AudioBlock, VideoBlock)):
                raise UnsupportedOptionError(f"ollama does not take {block.type} content",
                                             provider="ollama", model=model)
        if texts or images or calls or thinking:
            entry: dict[str, Any] = {"role": msg.role, "content": "\n".join(texts)}
            if images:
                entry["images"] = images
            if thinking:
                entry["thinking"] = "".join(thinking)
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
        out.extend(results)
    return out


class OllamaChatModel(HostedChatModel):
    """A model served by Ollama, through the official ``ollama`` async client.

    Args:
        model_name: e.g. ``qwen3:8b``.
        stream: stream chunks.
        options: model options (``temperature``, ``num_ctx`` ...).
        keep_alive: how long the server keeps the model loaded.
        enable_thinking: ask thinking models to think (``think``).
        host: defaults to ``OLLAMA_HOST`` or ``http://localhost:11434``.
        client_args / generate_kwargs: more arguments for the client / every call.
        **kwargs: generation arguments (sent in ``options``: ``max_tokens`` as
            ``num_predict``), ``max_retries``, ``timeout``, ``custom_role_conversions``,
            ``retry_policy``, ``structured_output``, and any other ``chat`` argument.

    Ollama has no ``tool_choice``: ``auto`` is its behaviour, ``none`` leaves the tools out
    of the request, ``required`` and a tool's name raise :class:`UnsupportedOptionError`.
    ``structured_model`` uses Ollama's JSON-schema ``format``.
    """

    provider = "ollama"
    supports_logprobs = True
    native_structured = True
    json_object_mode = True
    unsupported_tool_choices = frozenset({"required", "tool"})

    def __init__(
        self,
        model_name: str,
        stream: bool = False,
        options: dict[str, Any] | None = None,
        keep_alive: str | float = "5m",
        enable_thinking: bool | None = None,
        host: str | None = None,
        client_args: dict[str, Any] | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        import ollama

        super().__init__(model_name, stream, generate_kwargs=generate_kwargs, **kwargs)
        self.options = options
        self.keep_alive = keep_alive
        self.enable_thinking = enable_thinking
        client_args = dict(client_args or {})
        hooks = client_args.setdefault("event_hooks", {})
        hooks["response"] = [*hooks.get("response", []), _keep_error_headers]
        self.client = ollama.AsyncClient(**self._client_args(client_args, host=host,
                                                             timeout=self.timeout))
        self._ids = itertools.count(1)

    def _build(self, request: Request) -> dict[str, Any]:
        options = dict(self.options or {})
        given = request.options.given()
        if "max_tokens" in given:
            given["num_predict"] = given.pop("max_tokens")
        options.update(given)
        options.update(request.kwargs.get("options") or {})
        args: dict[str, Any] = {
            "model": self.model_name,
            "messages": format_ollama_messages(request.messages, self.model_name),
            "options": options or None, "keep_alive": self.keep_alive,
        }
        if self.enable_thinking is not None:
            args["think"] = self.enable_thinking
        if request.tools and request.tool_choice != "none":
            args["tools"] = openai_tools(request.tools)
        if request.schema is not None:
            args["format"] = request.schema.model_json_schema()
        elif request.json_mode:
            args["format"] = "json"
        args.update({k: v for k, v in request.kwargs.items() if k != "options"})
        return args

    def _call_id(self) -> str:
        return f"ollama_call_{next(self._ids)}"

    async def _complete(self, request: Request) -> ChatResponse:
        answer = await self.client.chat(**request.payload, stream=False)
        message = answer.message
        content: list[Any] = []
        if message.thinking:
            content.append(ThinkingBlock(thinking=message.thinking))
        if message.content:
            content.append(TextBlock(text=message.content))
        for call in message.tool_calls or []:
            content.append(self._tool_use(self._call_id(), call.function.name,
                                          dict(call.function.arguments)))
        scores = getattr(answer, "logprobs", None)
        return ChatResponse(
            content=content, delta=content, finish_reason=answer.done_reason or "stop",
            logprobs=token_logprobs(scores) if request.kwargs.get("logprobs") else None,
            usage=self._usage(request, answer.prompt_eval_count, answer.eval_count),
        )

    async def _stream(self, request: Request) -> AsyncGenerator[ChatResponse, None]:
        stream = await self.client.chat(**request.payload, stream=True)
        builder = ResponseBuilder(logprobs=[] if request.kwargs.get("logprobs") else None)
        finish: str | None = None
        prompt = completion = 0
        try:
            async for part in stream:
                message = part.message
                builder.add_thinking(message.thinking or "")
                builder.add_text(message.content or "")
                for call in message.tool_calls or []:
                    key = self._call_id()
                    builder.add_tool_call(key, id=key, name=call.function.name,
                                          arguments=json.dumps(dict(call.function.arguments)))
                scores = getattr(part, "logprobs", None)
                if scores and builder.logprobs is not None:
                    builder.add_logprobs(token_logprobs(scores))
                if message.thinking or message.content or message.tool_calls:
                    yield builder.chunk()
                if part.done:
                    finish = part.done_reason or "stop"
                    prompt, completion = part.prompt_eval_count or 0, part.eval_count or 0
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        yield self._last_chunk(builder, request, finish_reason=finish, input_tokens=prompt,
                               output_tokens=completion)

    def _map_error(self, exc: Exception) -> ModelError:
        import ollama

        if isinstance(exc, ollama.ResponseError):
            status = exc.status_code if exc.status_code > 0 else None
            headers, _ = _last_error_headers.get(), _last_error_headers.set(None)
            return self._http_error(status, f"HTTP {exc.status_code}: {exc.error}",
                                    headers if status is not None else None)
        return self._generic_error(exc)
