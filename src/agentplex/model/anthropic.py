"""Anthropic's Messages API: call and formatter (:class:`AnthropicChatModel`)."""

from __future__ import annotations

import base64
import os
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
from ._response import ChatResponse
from ._stream import ResponseBuilder
from ._structured import closed_schema

__all__ = ["AnthropicChatModel", "format_anthropic_messages"]


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
        max_tokens: the answer's token limit (required by the API).
        thinking: e.g. ``{"type": "enabled", "budget_tokens": 1024}``; thinking blocks come
            back with their signatures, which survive being sent back in the history.
        base_url: defaults to ``ANTHROPIC_BASE_URL`` or Anthropic's endpoint.
        client_args / generate_kwargs: more arguments for the client / every call.
        **kwargs: ``max_retries``, ``timeout``, ``custom_role_conversions``, ``retry_policy``.

    ``structured_model`` uses the API's JSON-schema output format.
    """

    provider = "anthropic"
    native_structured = True

    def __init__(
        self,
        model_name: str,
        api_key: str | None = None,
        stream: bool = False,
        max_tokens: int = 2048,
        thinking: dict[str, Any] | None = None,
        base_url: str | None = None,
        client_args: dict[str, Any] | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        import anthropic

        super().__init__(model_name, stream, generate_kwargs=generate_kwargs, **kwargs)
        self.max_tokens = max_tokens
        self.thinking = thinking
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key or os.environ.get("ANTHROPIC_API_KEY") or "not-needed",
            base_url=base_url or os.environ.get("ANTHROPIC_BASE_URL"),
            timeout=self.timeout, max_retries=0, **(client_args or {}),
        )

    def _check_choice(self, choice: NormalizedChoice) -> None:
        super()._check_choice(choice)
        forced = choice == "required" or isinstance(choice, tuple)
        if forced and self.thinking and self.thinking.get("type") == "enabled":
            raise UnsupportedOptionError(
                "anthropic cannot force tool use (tool_choice='required' or a tool's name) "
                "while thinking is enabled", provider=self.provider, model=self.model_name,
            )

    def _body(self, request: Request) -> dict[str, Any]:
        system, messages = format_anthropic_messages(request.messages, self.model_name)
        body: dict[str, Any] = {"model": self.model_name, "max_tokens": self.max_tokens,
                                "messages": messages}
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
        body.update(request.kwargs)
        return body

    async def _complete(self, request: Request) -> ChatResponse:
        message = await self.client.messages.create(**self._body(request))
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
            usage=self._usage(request, message.usage.input_tokens, message.usage.output_tokens),
        )

    async def _stream(self, request: Request) -> AsyncGenerator[ChatResponse, None]:
        stream = await self.client.messages.create(**self._body(request), stream=True)
        builder = ResponseBuilder()
        finish: str | None = None
        input_tokens = output_tokens = 0
        kinds: dict[int, str] = {}
        try:
            async for event in stream:
                if event.type == "message_start":
                    builder.id = event.message.id
                    input_tokens = event.message.usage.input_tokens
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
                               input_tokens=input_tokens, output_tokens=output_tokens)

    def _map_error(self, exc: Exception) -> ModelError:
        import anthropic

        return self._map_sdk_error(anthropic, exc)
