"""OpenAI chat completions (and every OpenAI-compatible server): call and formatter.

:class:`OpenAIChatModel` talks to ``/chat/completions`` through the official ``openai``
async SDK; ``base_url`` points it at vLLM, llama.cpp's server, Hugging Face's router or
any other server speaking the same wire schema. The formatter and the response readers
here are reused by the Azure and Hugging Face modules, which speak the same schema.
"""

from __future__ import annotations

import base64
import json
import os
from abc import abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
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
from ._errors import ModelError, ProviderError, UnsupportedOptionError
from ._formatting import (
    NormalizedChoice,
    chat_tool_call,
    function_specs,
    media_bytes,
    media_data_url,
    tool_output_parts,
)
from ._hosted import HostedChatModel, Request
from ._response import ChatResponse
from ._stream import ResponseBuilder, token_logprobs

__all__ = [
    "ChatCompletionsModel",
    "OpenAIChatModel",
    "format_openai_messages",
    "openai_tool_choice",
    "openai_tools",
]


def _media_part(block: Any, provider: str, model: str) -> dict[str, Any]:
    if isinstance(block, ImageBlock):
        return {"type": "image_url", "image_url": {"url": media_data_url(block)}}
    if isinstance(block, AudioBlock):
        mime, data = media_bytes(block)
        fmt = "mp3" if "mp" in mime.split("/")[-1] else "wav"
        return {"type": "input_audio",
                "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}
    raise UnsupportedOptionError(
        f"{type(block).__name__} content cannot be sent to chat completions",
        provider=provider, model=model,
    )


def format_openai_messages(
    messages: Sequence[Msg | dict[str, Any]],
    *,
    provider: str = "openai",
    model: str = "unknown",
    role_conversions: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Format a history as chat-completion messages.

    Text, images (as URLs or data URLs) and audio (``input_audio``) go into user content;
    ``tool_use`` blocks become ``tool_calls``; each ``tool_result`` becomes a ``tool``
    message (media in a tool result follows as a user message, since tool messages take
    text only); thinking from earlier turns is not sent back (the schema has no field for
    it). Video raises :class:`UnsupportedOptionError`. Dicts are passed on unchanged.
    ``role_conversions`` renames roles of the formatted messages (e.g. to ``developer``).
    """
    out: list[dict[str, Any]] = []
    for msg in messages:
        if isinstance(msg, dict):
            out.append(dict(msg))
            continue
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for block in msg.get_content_blocks():
            if isinstance(block, TextBlock):
                parts.append({"type": "text", "text": block.text})
            elif isinstance(block, ToolUseBlock):
                calls.append(chat_tool_call(block))
            elif isinstance(block, ToolResultBlock):
                text, media = tool_output_parts(block)
                results.append({"role": "tool", "tool_call_id": block.id, "content": text})
                if media:
                    results.append({"role": "user", "content": [
                        {"type": "text", "text": f"Media returned by tool {block.name}:"},
                        *(_media_part(b, provider, model) for b in media),
                    ]})
            elif isinstance(block, ThinkingBlock):
                continue
            elif isinstance(block, (ImageBlock, AudioBlock, VideoBlock)):
                parts.append(_media_part(block, provider, model))
        if parts or calls:
            entry: dict[str, Any] = {"role": msg.role}
            if all(p["type"] == "text" for p in parts):
                entry["content"] = "\n".join(p["text"] for p in parts) if parts else None
            else:
                entry["content"] = parts
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
        out.extend(results)
    if role_conversions:
        for entry in out:
            entry["role"] = role_conversions.get(entry["role"], entry["role"])
    return out


def openai_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Tools in the chat-completion ``{"type": "function", "function": ...}`` form."""
    if not tools:
        return None
    return [
        {"type": "function", "function": {"name": s.name, "description": s.description,
                                          "parameters": s.parameters}}
        for s in function_specs(tools)
    ]


def openai_tool_choice(choice: NormalizedChoice) -> Any:
    """``tool_choice`` in the chat-completion form."""
    if isinstance(choice, tuple):
        return {"type": "function", "function": {"name": choice[1]}}
    return choice


def _field(obj: Any, name: str) -> Any:
    """A field of an SDK object, a dict, or a pydantic model's extra fields."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    value = getattr(obj, name, None)
    if value is None:
        extra = getattr(obj, "model_extra", None) or {}
        value = extra.get(name)
    return value


def reasoning_text(message: Any) -> str | None:
    """Reasoning as OpenAI-compatible servers send it (``reasoning_content``/``reasoning``)."""
    value = _field(message, "reasoning_content") or _field(message, "reasoning")
    return value if isinstance(value, str) else None


class ChatCompletionsModel(HostedChatModel):
    """What every chat-completions client shares: the request body and reading answers.

    Subclasses provide the client: ``_send`` (one answer object) and ``_send_stream``
    (an async iterator of chunk objects, and a function closing it). Answer objects are
    read by attribute, so the OpenAI SDK's models and Hugging Face's dataclasses both work.
    """

    native_structured = True
    supports_logprobs = True
    reasoning_effort: str | None = None

    def _msg_role_conversions(self) -> dict[str, str]:
        return {k: v for k, v in self.custom_role_conversions.items()
                if v in ("user", "assistant", "system")}

    def _body(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": format_openai_messages(
                request.messages, provider=self.provider, model=self.model_name,
                role_conversions=self.custom_role_conversions,
            ),
        }
        if self.reasoning_effort is not None:
            body["reasoning_effort"] = self.reasoning_effort
        tools = openai_tools(request.tools)
        if tools:
            body["tools"] = tools
            if request.tool_choice is not None:
                body["tool_choice"] = openai_tool_choice(request.tool_choice)
        if request.schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema.__name__,
                                "schema": request.schema.model_json_schema()},
            }
        body.update(request.kwargs)
        return body

    @abstractmethod
    async def _send(self, body: dict[str, Any]) -> Any:
        """Send a non-streamed request; return the completion object."""

    @abstractmethod
    async def _send_stream(
        self, body: dict[str, Any]
    ) -> tuple[AsyncIterator[Any], Callable[[], Awaitable[None]]]:
        """Send a streamed request; return the chunk iterator and its closer."""

    async def _complete(self, request: Request) -> ChatResponse:
        completion = await self._send(self._body(request))
        if not completion.choices:
            raise ProviderError("the response has no choices", provider=self.provider,
                                model=self.model_name)
        choice = completion.choices[0]
        message = choice.message
        content: list[Any] = []
        thinking = reasoning_text(message)
        if thinking:
            content.append(ThinkingBlock(thinking=thinking))
        if message.content:
            content.append(TextBlock(text=message.content))
        for index, call in enumerate(message.tool_calls or []):
            content.append(self._tool_use(call.id or f"call_{index}", call.function.name,
                                          call.function.arguments))
        usage = completion.usage
        scores = _field(choice, "logprobs")
        return ChatResponse(
            id=completion.id or ChatResponse().id, content=content, delta=content,
            finish_reason=choice.finish_reason,
            logprobs=token_logprobs(_field(scores, "content")) if scores is not None else None,
            usage=self._usage(request, usage and usage.prompt_tokens,
                              usage and usage.completion_tokens),
        )

    async def _stream(self, request: Request) -> AsyncGenerator[ChatResponse, None]:
        body = self._body(request)
        body["stream"] = True
        body.setdefault("stream_options", {"include_usage": True})
        stream, close = await self._send_stream(body)
        builder = ResponseBuilder(logprobs=[] if body.get("logprobs") else None)
        finish: str | None = None
        prompt = completion = 0
        try:
            async for chunk in stream:
                builder.id = builder.id or chunk.id
                if chunk.usage is not None:
                    prompt, completion = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                grew = False
                for choice in chunk.choices[:1]:
                    delta = choice.delta
                    thinking, text = reasoning_text(delta), delta.content
                    builder.add_thinking(thinking or "")
                    builder.add_text(text or "")
                    for call in delta.tool_calls or []:
                        fn = call.function
                        arguments = (fn and fn.arguments) or ""
                        if not isinstance(arguments, str):
                            arguments = json.dumps(arguments)
                        builder.add_tool_call(call.index, id=call.id, name=fn and fn.name,
                                              arguments=arguments)
                    scores = _field(_field(choice, "logprobs"), "content")
                    if scores:
                        builder.add_logprobs(token_logprobs(scores))
                    grew = bool(thinking or text or delta.tool_calls or scores)
                    finish = choice.finish_reason or finish
                if grew:
                    yield builder.chunk()
        finally:
            await close()
        yield self._last_chunk(builder, request, finish_reason=finish, input_tokens=prompt,
                               output_tokens=completion)


class OpenAIChatModel(ChatCompletionsModel):
    """A model served through OpenAI's chat completions API (or a compatible server).

    Args:
        model_name: e.g. ``gpt-4o-mini``, or whatever the compatible server calls it.
        api_key: defaults to ``OPENAI_API_KEY``.
        stream: stream chunks.
        reasoning_effort: ``minimal``/``low``/``medium``/``high`` for reasoning models.
        organization: defaults to ``OPENAI_ORG_ID``.
        base_url: defaults to ``OPENAI_BASE_URL`` or OpenAI's own endpoint.
        client_args: more arguments for ``openai.AsyncOpenAI``.
        generate_kwargs: more arguments for every ``chat.completions.create`` call.
        **kwargs: ``max_retries``, ``timeout``, ``custom_role_conversions``,
            ``retry_policy`` (see :class:`HostedChatModel`).
    """

    provider = "openai"

    def __init__(
        self,
        model_name: str,
        api_key: str | None = None,
        stream: bool = False,
        reasoning_effort: str | None = None,
        organization: str | None = None,
        base_url: str | None = None,
        client_args: dict[str, Any] | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name, stream, generate_kwargs=generate_kwargs, **kwargs)
        self.reasoning_effort = reasoning_effort
        self.client = self._make_client(api_key, organization, base_url, dict(client_args or {}))

    def _make_client(
        self, api_key: str | None, organization: str | None, base_url: str | None,
        client_args: dict[str, Any],
    ) -> Any:
        import openai

        return openai.AsyncOpenAI(
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
            organization=organization or os.environ.get("OPENAI_ORG_ID"),
            base_url=base_url or os.environ.get("OPENAI_BASE_URL"),
            timeout=self.timeout, max_retries=0, **client_args,
        )

    async def _send(self, body: dict[str, Any]) -> Any:
        return await self.client.chat.completions.create(**body)

    async def _send_stream(
        self, body: dict[str, Any]
    ) -> tuple[AsyncIterator[Any], Callable[[], Awaitable[None]]]:
        stream = await self.client.chat.completions.create(**body)
        return stream, stream.close

    def _map_error(self, exc: Exception) -> ModelError:
        import openai

        return self._map_sdk_error(openai, exc)
