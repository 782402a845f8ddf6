"""Alibaba Cloud DashScope (Qwen): call and formatter (:class:`DashScopeChatModel`).

Text models go through ``AioGeneration``, vision/audio models through
``AioMultiModalConversation``; :class:`DashScopeChatModel` picks the right one per call.
"""

from __future__ import annotations

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
    VideoBlock,
)
from ._errors import ModelError, ProviderError, UnsupportedOptionError
from ._formatting import (
    NormalizedChoice,
    chat_tool_call,
    function_specs,
    media_data_url,
    tool_output_parts,
)
from ._hosted import HostedChatModel, Request
from ._options import NAMES
from ._response import ChatResponse
from ._stream import ResponseBuilder

__all__ = ["DashScopeChatModel", "format_dashscope_messages"]

_MEDIA = (ImageBlock, AudioBlock, VideoBlock)
_MULTIMODAL_HINTS = ("-vl", "vl-", "omni", "audio", "qvq")


def _media(block: ImageBlock | AudioBlock | VideoBlock) -> dict[str, Any]:
    return {block.type: media_data_url(block)}


def format_dashscope_messages(
    messages: Sequence[Msg | dict[str, Any]], multimodal: bool
) -> list[dict[str, Any]]:
    """Format a history for DashScope.

    Text models take string contents; multimodal models take lists of ``{"text": ...}``,
    ``{"image": url}``, ``{"audio": url}``, ``{"video": url}`` parts (inline media as data
    URLs). Tool calls and results use the ``tool_calls`` / ``tool`` role schema; thinking
    from earlier turns is not sent back (the API has no field for it).
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
                parts.append({"text": block.text})
            elif isinstance(block, _MEDIA):
                parts.append(_media(block))
            elif isinstance(block, ToolUseBlock):
                calls.append(chat_tool_call(block))
            elif isinstance(block, ToolResultBlock):
                text, media = tool_output_parts(block)
                results.append({"role": "tool", "tool_call_id": block.id, "name": block.name,
                                "content": text})
                if media:
                    results.append({"role": "user", "content": [
                        {"text": f"Media returned by tool {block.name}:"},
                        *(_media(b) for b in media)]})
            elif isinstance(block, ThinkingBlock):
                continue
        if parts or calls:
            entry: dict[str, Any] = {"role": msg.role}
            if multimodal:
                entry["content"] = parts
            else:
                entry["content"] = "\n".join(p["text"] for p in parts)
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
        out.extend(results)
    if not multimodal:
        for entry in out:
            if isinstance(entry.get("content"), list) and entry["role"] != "user":
                entry["content"] = "\n".join(p.get("text", "") for p in entry["content"])
    return out


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    return obj.get(key) if hasattr(obj, "get") else getattr(obj, key, None)


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


class DashScopeChatModel(HostedChatModel):
    """Qwen and other DashScope models through the official ``dashscope`` async API.

    Args:
        model_name: e.g. ``qwen-plus`` or ``qwen-vl-max``.
        api_key: defaults to ``DASHSCOPE_API_KEY``.
        stream: stream chunks.
        enable_thinking: thinking for Qwen3 / QwQ / DeepSeek-R1 models.
        generate_kwargs: more parameters for every call (``temperature``, ``seed`` ...).
        base_http_api_url: defaults to ``DASHSCOPE_HTTP_BASE_URL`` or the SDK's default.
        multimodal: force the multimodal API (default: when the model name says so or the
            history holds images, audio or video).
        **kwargs: generation arguments (``frequency_penalty`` is not on this wire),
            ``max_retries``, ``timeout``, ``custom_role_conversions``, ``retry_policy``,
            ``structured_output``, and any other DashScope parameter.

    DashScope's ``tool_choice`` takes ``auto``, ``none`` or one function: ``required`` is
    honoured by forcing the only tool when one is given and raises
    :class:`UnsupportedOptionError` otherwise. ``structured_model`` uses a forced tool.
    """

    provider = "dashscope"
    native_structured = False
    json_object_mode = True
    supported_options = NAMES - {"frequency_penalty"}

    def __init__(
        self,
        model_name: str,
        api_key: str | None = None,
        stream: bool = False,
        enable_thinking: bool | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        base_http_api_url: str | None = None,
        multimodal: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name, stream, generate_kwargs=generate_kwargs, **kwargs)
        self.api_key = self._credential(api_key, "DASHSCOPE_API_KEY")
        self.enable_thinking = enable_thinking
        self.base_http_api_url = base_http_api_url or os.environ.get("DASHSCOPE_HTTP_BASE_URL")
        self.multimodal = multimodal
        self._session: Any = None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _is_multimodal(self, request: Request) -> bool:
        if self.multimodal is not None:
            return self.multimodal
        if any(hint in self.model_name.lower() for hint in _MULTIMODAL_HINTS):
            return True
        return any(isinstance(m, Msg) and any(isinstance(b, _MEDIA)
                                              for b in m.get_content_blocks())
                   for m in request.messages)

    def _tool_choice(self, request: Request) -> Any:
        choice: NormalizedChoice = request.tool_choice
        if choice == "required":
            specs = function_specs(request.tools)
            if len(specs) != 1:
                raise UnsupportedOptionError(
                    "dashscope cannot honour tool_choice='required' with several tools "
                    "(its API forces one named function only)",
                    provider=self.provider, model=self.model_name)
            choice = ("tool", specs[0].name)
        if isinstance(choice, tuple):
            return {"type": "function", "function": {"name": choice[1]}}
        return choice

    def _build(self, request: Request) -> dict[str, Any]:
        multimodal = self._is_multimodal(request)
        args: dict[str, Any] = {
            "model": self.model_name, "api_key": self.api_key,
            "messages": format_dashscope_messages(request.messages, multimodal),
            "result_format": "message",
        }
        if self.enable_thinking is not None:
            args["enable_thinking"] = self.enable_thinking
        if request.tools:
            args["tools"] = [{"type": "function", "function": {
                "name": s.name, "description": s.description, "parameters": s.parameters}}
                for s in function_specs(request.tools)]
            if request.tool_choice is not None:
                args["tool_choice"] = self._tool_choice(request)
        if self.base_http_api_url:
            args["base_address"] = self.base_http_api_url
        if self.timeout is not None:
            args["request_timeout"] = self.timeout
        if request.json_mode:
            args["response_format"] = {"type": "json_object"}
        args.update(request.options.given())
        args.update(request.kwargs)
        return args

    async def _send(self, request: Request, stream: bool) -> Any:
        import aiohttp
        from dashscope import AioGeneration, AioMultiModalConversation

        args = {**request.payload, "stream": stream}
        if stream:
            args["incremental_output"] = True
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        args["session"] = self._session
        api = AioMultiModalConversation if self._is_multimodal(request) else AioGeneration
        return await api.call(**args)

    def _check(self, response: Any) -> None:
        status = _get(response, "status_code")
        if status != 200:
            code, message = _get(response, "code"), _get(response, "message")
            raise self._http_error(int(status or 500), f"HTTP {status} {code}: {message}",
                                   _get(response, "headers"))

    async def _complete(self, request: Request) -> ChatResponse:
        response = await self._send(request, stream=False)
        self._check(response)
        choices = _get(_get(response, "output"), "choices") or []
        if not choices:
            raise ProviderError("the response has no choices", provider=self.provider,
                                model=self.model_name)
        message = _get(choices[0], "message")
        content: list[Any] = []
        thinking = _get(message, "reasoning_content")
        if thinking:
            content.append(ThinkingBlock(thinking=thinking))
        text = _text(_get(message, "content"))
        if text:
            content.append(TextBlock(text=text))
        for call in _get(message, "tool_calls") or []:
            fn = call["function"]
            content.append(self._tool_use(call.get("id") or fn["name"], fn["name"],
                                          fn.get("arguments")))
        usage = _get(response, "usage")
        return ChatResponse(
            id=_get(response, "request_id") or ChatResponse().id, content=content,
            delta=content, finish_reason=_get(choices[0], "finish_reason"),
            usage=self._usage(request, _get(usage, "input_tokens"),
                              _get(usage, "output_tokens")),
        )

    async def _stream(self, request: Request) -> AsyncGenerator[ChatResponse, None]:
        stream = await self._send(request, stream=True)
        builder = ResponseBuilder()
        finish: str | None = None
        prompt = completion = 0
        try:
            async for response in stream:
                self._check(response)
                builder.id = builder.id or _get(response, "request_id")
                usage = _get(response, "usage")
                if usage:
                    prompt = _get(usage, "input_tokens") or prompt
                    completion = _get(usage, "output_tokens") or completion
                for choice in (_get(_get(response, "output"), "choices") or [])[:1]:
                    message = _get(choice, "message") or {}
                    thinking, text = _get(message, "reasoning_content"), _text(
                        _get(message, "content"))
                    builder.add_thinking(thinking or "")
                    builder.add_text(text)
                    calls = _get(message, "tool_calls") or []
                    for call in calls:
                        fn = call.get("function") or {}
                        builder.add_tool_call(call.get("index", 0), id=call.get("id"),
                                              name=fn.get("name"),
                                              arguments=fn.get("arguments") or "")
                    reason = _get(choice, "finish_reason")
                    if reason and reason != "null":
                        finish = reason
                    if thinking or text or calls:
                        yield builder.chunk()
        finally:
            await stream.aclose()
        yield self._last_chunk(builder, request, finish_reason=finish, input_tokens=prompt,
                               output_tokens=completion)

    def _map_error(self, exc: Exception) -> ModelError:
        return self._generic_error(exc)
