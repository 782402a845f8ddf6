"""Anthropic's Messages API: call and formatter (:class:`AnthropicChatModel`)."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Literal

from ..message import (
    AudioBlock,
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
    VideoBlock,
)
from ._errors import ModelError, UnsupportedOptionError
from ._formatting import (
    NormalizedChoice,
    append_turn,
    function_specs,
    media_bytes,
    split_leading_system,
)
from ._hosted import HostedChatModel, Request
from ._options import GenerationOptions
from ._response import ChatResponse, ChatUsage
from ._stream import ResponseBuilder
from ._structured import closed_schema

__all__ = ["AnthropicChatModel", "add_cache_breakpoints", "format_anthropic_messages"]


def _media(block: ImageBlock, model: str) -> dict[str, Any]:
    source = block.source
    if isinstance(source, URLSource) and source.url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": source.url}}
    mime, data = media_bytes(block)
    return {"type": "image", "source": {"type": "base64", "media_type": mime,
                                        "data": base64.b64encode(data).decode()}}


def _block(block: Any, model: str) -> dict[str, Any] | None:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ImageBlock):
        return _media(block, model)
    if isinstance(block, ThinkingBlock):
        if block.signature is None:
            return None  # another provider's reasoning: Anthropic only takes its own, signed
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    if isinstance(block, ToolUseBlock):
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    if isinstance(block, ToolResultBlock):
        output: Any = block.output
        if not isinstance(output, str):
            output = [_block(b, model) for b in output]
        return {"type": "tool_result", "tool_use_id": block.id, "content": output,
                "is_error": block.is_error}
    if isinstance(block, (AudioBlock, VideoBlock)):
        raise UnsupportedOptionError(f"Anthropic does not take {block.type} content",
                                     provider="anthropic", model=model)
    raise TypeError(f"unknown block {block!r}")


def format_anthropic_messages(
    messages: Sequence[Msg | dict[str, Any]], model: str = "unknown"
) -> tuple[str | None, list[dict[str, Any]]]:
    """Return ``(system, messages)`` for the Messages API.

    Leading system messages become the ``system`` parameter; a later system message (a
    moderator's announcement in a multi-agent run) becomes a user turn; tool results go
    into user turns. Consecutive turns of one role are merged, tool results first.
    Unsigned thinking (from another provider) is left out; audio and video raise
    :class:`UnsupportedOptionError`. Dicts are passed on unchanged.
    """
    system, rest = split_leading_system(messages)
    out: list[dict[str, Any]] = []
    for msg in rest:
        if isinstance(msg, dict):
            out.append(dict(msg))
            continue
        role = "assistant" if msg.role == "assistant" else "user"
        blocks = [b for b in (_block(x, model) for x in msg.get_content_blocks()) if b]
        if blocks:
            append_turn(out, role, "content", blocks)
    for entry in out:
        if isinstance(entry.get("content"), list):
            entry["content"].sort(key=lambda b: b.get("type") != "tool_result")
    return system, out


def _usage_counts(usage: Any) -> dict[str, int]:
    """Anthropic's usage as ours: its ``input_tokens`` leaves out the cached ones."""
    read = getattr(usage, "cache_read_input_tokens", None) or 0
    created = getattr(usage, "cache_creation_input_tokens", None) or 0
    return {"input_tokens": (usage.input_tokens or 0) + read + created,
            "cached_input_tokens": read, "cache_creation_input_tokens": created}


def _mark(blocks: Any, control: dict[str, Any]) -> Any:
    """``blocks`` (a string or block list) with ``cache_control`` on the last block that
    may carry one (thinking blocks may not)."""
    if isinstance(blocks, str):
        return [{"type": "text", "text": blocks, "cache_control": control}]
    out = [dict(b) for b in blocks]
    for block in reversed(out):
        if block.get("type") not in ("thinking", "redacted_thinking"):
            block["cache_control"] = control
            break
    return out


def add_cache_breakpoints(body: dict[str, Any], control: dict[str, Any]) -> None:
    """Prompt-cache breakpoints (at most the API's four): the system prompt, the last tool,
    the last turn (written for the next call) and the user turn before it (read now)."""
    if body.get("system"):
        body["system"] = _mark(body["system"], control)
    if body.get("tools"):
        body["tools"] = [*body["tools"][:-1], {**body["tools"][-1], "cache_control": control}]
    messages = body["messages"]
    turns = [i for i, m in enumerate(messages) if m.get("content")]
    users = [i for i in turns[:-1] if messages[i]["role"] == "user"]
    for index in {*turns[-1:], *users[-1:]}:
        messages[index] = {**messages[index], "content": _mark(messages[index]["content"],
                                                                  control)}


def _tool_choice(choice: NormalizedChoice) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, tuple):
        return {"type": "tool", "name": choice[1]}
    return {"type": {"required": "any"}.get(choice, choice)}


class AnthropicChatModel(HostedChatModel):
    """Claude through the official ``anthropic`` async SDK.

    Args:
        model_name: e.g. ``claude-sonnet-4-5``.
        api_key: defaults to ``ANTHROPIC_API_KEY``.
        stream: stream chunks.
        max_tokens: the answer's token limit (required by the API); a per-call
            ``max_tokens`` wins.
        thinking: e.g. ``{"type": "enabled", "budget_tokens": 1024}``; thinking blocks come
            back with their signatures, which survive being sent back in the history.
        base_url: defaults to ``ANTHROPIC_BASE_URL`` or Anthropic's endpoint. Without a
            ``base_url`` an API key is required (:class:`MissingCredentialsError`).
        prompt_caching: put ``cache_control`` breakpoints on the system prompt, the tools,
            the newest turn and the user turn before it (``True`` / ``"5m"``: the default
            five-minute cache, ``"1h"``: the one-hour one). Cache reads and writes come
            back in ``usage.cached_input_tokens`` / ``cache_creation_input_tokens``.
        client_args / generate_kwargs: more arguments for the client / every call.
        **kwargs: generation arguments, ``max_retries``, ``timeout``,
            ``custom_role_conversions``, ``retry_policy``, ``structured_output``, and any
            other argument of ``messages.create``.

    Generation arguments: ``stop`` is sent as ``stop_sequences``; ``temperature``,
    ``top_p`` and ``top_k`` travel in ``extra_body`` (the SDK's ``messages.create`` has no
    such parameters since 2.x, the API still takes them); ``seed``, ``presence_penalty``
    and ``frequency_penalty`` raise :class:`UnsupportedOptionError`.
    ``structured_model`` uses the API's JSON-schema output format.
    """

    provider = "anthropic"
    native_structured = True
    supported_options = frozenset({"temperature", "top_p", "top_k", "max_tokens", "stop"})

    def __init__(
        self,
        model_name: str,
        api_key: str | None = None,
        stream: bool = False,
        max_tokens: int = 2048,
        thinking: dict[str, Any] | None = None,
        base_url: str | None = None,
        prompt_caching: bool | Literal["5m", "1h"] = False,
        client_args: dict[str, Any] | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        import anthropic

        super().__init__(model_name, stream, generate_kwargs=generate_kwargs, **kwargs)
        self.max_tokens = max_tokens
        self.thinking = thinking
        self.prompt_caching = prompt_caching
        base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL")
        key = self._credential(api_key, "ANTHROPIC_API_KEY", required=base_url is None)
        self.client = anthropic.AsyncAnthropic(**self._client_args(
            client_args, api_key=key or "not-needed", base_url=base_url,
            timeout=self.timeout, max_retries=0))

    def _check_choice(self, choice: NormalizedChoice) -> None:
        super()._check_choice(choice)
        forced = choice == "required" or isinstance(choice, tuple)
        if forced and self.thinking and self.thinking.get("type") == "enabled":
            raise UnsupportedOptionError(
                "anthropic cannot force tool use (tool_choice='required' or a tool's name) "
                "while thinking is enabled", provider=self.provider, model=self.model_name,
            )

    @staticmethod
    def _generation(options: GenerationOptions) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(parameters, extra_body)``: the SDK's own parameters and the sampling
        arguments its ``messages.create`` no longer names."""
        given = options.given()
        params: dict[str, Any] = {}
        if "max_tokens" in given:
            params["max_tokens"] = given.pop("max_tokens")
        if "stop" in given:
            params["stop_sequences"] = given.pop("stop")
        return params, given

    def _build(self, request: Request) -> dict[str, Any]:
        system, messages = format_anthropic_messages(request.messages, self.model_name)
        body: dict[str, Any] = {"model": self.model_name, "max_tokens": self.max_tokens,
                                "messages": messages}
        params, extra = self._generation(request.options)
        body.update(params)
        if extra:
            body["extra_body"] = extra
        if system:
            body["system"] = system
        if self.thinking:
            body["thinking"] = self.thinking
        if request.tools:
            body["tools"] = [{"name": s.name, "description": s.description,
                              "input_schema": s.parameters}
                             for s in function_specs(request.tools)]
            choice = _tool_choice(request.tool_choice)
            if choice is not None:
                body["tool_choice"] = choice
        if request.schema is not None:
            body["output_config"] = {"format": {"type": "json_schema",
                                                "schema": closed_schema(request.schema)}}
        if self.prompt_caching:
            control: dict[str, Any] = {"type": "ephemeral"}
            if self.prompt_caching == "1h":
                control["ttl"] = "1h"
            add_cache_breakpoints(body, control)
        for key, value in request.kwargs.items():
            if key == "extra_body" and isinstance(value, dict):
                body["extra_body"] = {**body.get("extra_body", {}), **value}
            else:
                body[key] = value
        return body

    async def _count(self, request: Request) -> int | None:
        """``messages.count_tokens``: the API's own count, tools and system included."""
        body = self._build(request)
        args = {k: body[k] for k in ("model", "messages", "system", "tools", "thinking")
                if k in body}
        result = await self.client.messages.count_tokens(**args)
        return int(result.input_tokens)

    async def _complete(self, request: Request) -> ChatResponse:
        message = await self.client.messages.create(**request.payload)
        content: list[Any] = []
        for block in message.content:
            if block.type == "text":
                content.append(TextBlock(text=block.text))
            elif block.type == "thinking":
                content.append(ThinkingBlock(thinking=block.thinking, signature=block.signature))
            elif block.type == "tool_use":
                content.append(self._tool_use(block.id, block.name, dict(block.input)))
        return ChatResponse(
            id=message.id, content=content, delta=content, finish_reason=message.stop_reason,
            usage=ChatUsage(output_tokens=message.usage.output_tokens, time=request.elapsed(),
                            **_usage_counts(message.usage)),
        )

    async def _stream(self, request: Request) -> AsyncGenerator[ChatResponse, None]:
        stream = await self.client.messages.create(**request.payload, stream=True)
        builder = ResponseBuilder()
        finish: str | None = None
        output_tokens = 0
        counts: dict[str, int] = {}
        kinds: dict[int, str] = {}
        try:
            async for event in stream:
                if event.type == "message_start":
                    builder.id = event.message.id
                    counts = _usage_counts(event.message.usage)
                elif event.type == "content_block_start":
                    block = event.content_block
                    kinds[event.index] = block.type
                    if block.type == "tool_use":
                        builder.add_tool_call(event.index, id=block.id, name=block.name)
                        yield builder.chunk()
                elif event.type == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta":
                        builder.add_text(delta.text)
                    elif delta.type == "thinking_delta":
                        builder.add_thinking(delta.thinking)
                    elif delta.type == "signature_delta":
                        builder.add_thinking("", signature=delta.signature)
                    elif delta.type == "input_json_delta":
                        builder.add_tool_call(event.index, arguments=delta.partial_json)
                    else:
                        continue
                    yield builder.chunk()
                elif event.type == "message_delta":
                    finish = event.delta.stop_reason or finish
                    output_tokens = event.usage.output_tokens
                elif event.type == "message_stop":
                    finish = finish or "end_turn"
        finally:
            await stream.close()
        yield self._last_chunk(builder, request, finish_reason=finish,
                               input_tokens=counts.pop("input_tokens", 0),
                               output_tokens=output_tokens, details=counts)

    def _map_error(self, exc: Exception) -> ModelError:
        import anthropic

        return self._map_sdk_error(anthropic, exc)
