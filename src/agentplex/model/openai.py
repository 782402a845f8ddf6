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
from ._options import NAMES, GenerationOptions
from ._response import ChatResponse
from ._stream import ResponseBuilder, token_logprobs
from ._structured import schema_name

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
                # "" rather than null beside tool_calls: llama.cpp's server rejects null
                entry["content"] = "\n".join(p["text"] for p in parts)
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
    value = getattr(obj, name, None)  # attributes first: huggingface_hub's types are dicts too
    if value is None and isinstance(obj, dict):
        value = obj.get(name)
    if value is None:
        extra = getattr(obj, "model_extra", None) or {}
        value = extra.get(name)
    return value


def usage_details(usage: Any) -> dict[str, int]:
    """Cached prompt tokens and reasoning tokens of a chat-completion ``usage``."""
    prompt = _field(usage, "prompt_tokens_details")
    completion = _field(usage, "completion_tokens_details")
    return {"cached_input_tokens": _field(prompt, "cached_tokens") or 0,
            "reasoning_tokens": _field(completion, "reasoning_tokens") or 0}


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
    json_object_mode = True
    supported_options = NAMES - {"top_k"}
    supports_logprobs = True
    reasoning_effort: str | None = None
    max_tokens_param = "max_tokens"
    """The body field the answer's budget goes in (OpenAI itself: ``max_completion_tokens``)."""

    def _msg_role_conversions(self) -> dict[str, str]:
        return {k: v for k, v in self.custom_role_conversions.items()
                if v in ("user", "assistant", "system")}

    def _generation(self, options: GenerationOptions) -> dict[str, Any]:
        """Generation arguments under the chat-completion names."""
        given = options.given()
        if "max_tokens" in given:
            given[self.max_tokens_param] = given.pop("max_tokens")
        return given

    def _build(self, request: Request) -> dict[str, Any]:
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
                "json_schema": {"name": schema_name(request.schema),
                                "schema": request.schema.model_json_schema()},
            }
        elif request.json_mode:
            body["response_format"] = {"type": "json_object"}
        body.update(self._generation(request.options))
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
        completion = await self._send(request.payload)
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
                              usage and usage.completion_tokens, details=usage_details(usage)),
        )

    async def _stream(self, request: Request) -> AsyncGenerator[ChatResponse, None]:
        body = dict(request.payload)
        body["stream"] = True
        body.setdefault("stream_options", {"include_usage": True})
        stream, close = await self._send_stream(body)
        builder = ResponseBuilder(logprobs=[] if body.get("logprobs") else None)
        finish: str | None = None
        prompt = completion = 0
        details: dict[str, int] = {}
        try:
            async for chunk in stream:
                builder.id = builder.id or chunk.id
                usage = _field(chunk, "usage")  # LiteLLM's chunks may lack the attribute
                if usage is not None:
                    prompt = _field(usage, "prompt_tokens") or 0
                    completion = _field(usage, "completion_tokens") or 0
                    details = usage_details(usage)
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
                               output_tokens=completion, details=details)


class OpenAIChatModel(ChatCompletionsModel):
    """A model served through OpenAI's chat completions API (or a compatible server).

    Args:
        model_name: e.g. ``gpt-4o-mini``, or whatever the compatible server calls it.
        api_key: defaults to ``OPENAI_API_KEY``.
        stream: stream chunks.
        reasoning_effort: ``minimal``/``low``/``medium``/``high`` for reasoning models.
        organization: defaults to ``OPENAI_ORG_ID``.
        base_url: defaults to ``OPENAI_BASE_URL`` or OpenAI's own endpoint. Without a
            ``base_url`` an API key is required (:class:`MissingCredentialsError`); a
            compatible server gets a placeholder key when none is given.
        client_args: more arguments for ``openai.AsyncOpenAI`` (``timeout``,
            ``max_retries``, ``default_headers`` ... override ours).
        generate_kwargs: more arguments for every ``chat.completions.create`` call.
        prompt_cache_key: OpenAI's ``prompt_cache_key``: requests sharing a key (and a
            long common prefix) are routed to the same prompt cache; cache hits come back
            in ``usage.cached_input_tokens``.
        max_tokens_param: the field ``max_tokens`` is sent in: ``max_completion_tokens``
            on OpenAI's own endpoint (its reasoning models refuse ``max_tokens``),
            ``max_tokens`` on a compatible server (llama.cpp, older vLLM and TGI know no
            other).
        **kwargs: generation arguments (``temperature``, ``max_tokens``, ``stop`` ...),
            ``max_retries``, ``timeout``, ``custom_role_conversions``, ``retry_policy``,
            ``structured_output``, and any other body field (see :class:`HostedChatModel`).
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
        max_tokens_param: str | None = None,
        prompt_cache_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        if prompt_cache_key is not None:
            kwargs["prompt_cache_key"] = prompt_cache_key
        super().__init__(model_name, stream, generate_kwargs=generate_kwargs, **kwargs)
        self.reasoning_effort = reasoning_effort
        self.max_tokens_param = max_tokens_param or (
            "max_tokens" if base_url or os.environ.get("OPENAI_BASE_URL")
            else "max_completion_tokens")
        self.client = self._make_client(api_key, organization, base_url, client_args)

    def _make_client(
        self, api_key: str | None, organization: str | None, base_url: str | None,
        client_args: dict[str, Any] | None,
    ) -> Any:
        import openai

        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        key = self._credential(api_key, "OPENAI_API_KEY", required=base_url is None)
        return openai.AsyncOpenAI(**self._client_args(
            client_args, api_key=key or "not-needed",
            organization=organization or os.environ.get("OPENAI_ORG_ID"), base_url=base_url,
            timeout=self.timeout, max_retries=0))

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
