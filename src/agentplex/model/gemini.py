"""Google Gemini through ``google-genai``: call and formatter (:class:`GeminiChatModel`)."""

from __future__ import annotations

import base64
import itertools
import mimetypes
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
from ._errors import ModelError, ProviderError
from ._formatting import (
    NormalizedChoice,
    append_turn,
    function_specs,
    media_bytes,
    split_leading_system,
)
from ._hosted import HostedChatModel, Request
from ._response import ChatResponse, TokenLogprob, TopLogprob
from ._stream import ResponseBuilder
from ._tokens import estimate_tokens

__all__ = ["GeminiChatModel", "format_gemini_contents"]

_MEDIA = (ImageBlock, AudioBlock, VideoBlock)


def _media_part(block: ImageBlock | AudioBlock | VideoBlock) -> dict[str, Any]:
    source = block.source
    if isinstance(source, URLSource) and source.url.startswith(("http://", "https://", "gs://")):
        mime = mimetypes.guess_type(source.url)[0] or f"{block.type}/*"
        return {"file_data": {"file_uri": source.url, "mime_type": mime}}
    mime, data = media_bytes(block)
    return {"inline_data": {"mime_type": mime, "data": data}}


def _parts(msg: Msg) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in msg.get_content_blocks():
        if isinstance(block, TextBlock):
            parts.append({"text": block.text})
        elif isinstance(block, ThinkingBlock):
            part: dict[str, Any] = {"text": block.thinking, "thought": True}
            if block.signature:
                part["thought_signature"] = base64.b64decode(block.signature)
            parts.append(part)
        elif isinstance(block, ToolUseBlock):
            parts.append({"function_call": {"id": block.id, "name": block.name,
                                            "args": block.input}})
        elif isinstance(block, ToolResultBlock):
            output = block.output
            text = output if isinstance(output, str) else "\n".join(
                b.text for b in output if isinstance(b, TextBlock))
            key = "error" if block.is_error else "output"
            parts.append({"function_response": {"id": block.id, "name": block.name,
                                                "response": {key: text}}})
            if not isinstance(output, str):
                parts += [_media_part(b) for b in output if isinstance(b, _MEDIA)]
        elif isinstance(block, _MEDIA):
            parts.append(_media_part(block))
    return parts


def format_gemini_contents(
    messages: Sequence[Msg | dict[str, Any]],
) -> tuple[str | None, list[dict[str, Any]]]:
    """Return ``(system_instruction, contents)``.

    Leading system messages become the system instruction, later ones user turns; the
    assistant is ``model``; tool results are ``function_response`` parts; images, audio
    and video go inline (or by ``file_uri`` for http/gs URLs); thinking goes back as
    ``thought`` parts with their signatures. Consecutive turns of one role are merged.
    """
    system, rest = split_leading_system(messages)
    contents: list[dict[str, Any]] = []
    for msg in rest:
        if isinstance(msg, dict):
            contents.append(dict(msg))
            continue
        role = "model" if msg.role == "assistant" else "user"
        parts = _parts(msg)
        if parts:
            append_turn(contents, role, "parts", parts)
    return system, contents


def _read_logprobs(candidate: Any, builder: ResponseBuilder) -> bool:
    """Add a candidate's ``logprobs_result`` (chosen tokens, top candidates) to ``builder``."""
    result = getattr(candidate, "logprobs_result", None)
    if result is None or builder.logprobs is None or not result.chosen_candidates:
        return False
    tops = result.top_candidates or []
    builder.add_logprobs([
        TokenLogprob(token=c.token or "", logprob=float(c.log_probability or 0.0),
                     top_logprobs=[TopLogprob(token=t.token or "",
                                              logprob=float(t.log_probability or 0.0))
                                   for t in (tops[i].candidates or [] if i < len(tops)
                                             else [])])
        for i, c in enumerate(result.chosen_candidates)])
    return True


def _tool_config(choice: NormalizedChoice) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, tuple):
        return {"function_calling_config": {"mode": "ANY",
                                            "allowed_function_names": [choice[1]]}}
    mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]
    return {"function_calling_config": {"mode": mode}}


class GeminiChatModel(HostedChatModel):
    """Gemini through the official ``google-genai`` async client (``client.aio``).

    Args:
        model_name: e.g. ``gemini-2.5-flash``.
        api_key: defaults to ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``.
        stream: stream chunks.
        thinking_config: e.g. ``{"include_thoughts": True, "thinking_budget": 1024}``.
        cached_content: the name of Gemini cached content to send with every call (see
            :meth:`create_cache`); a per-call ``cached_content=`` overrides it.
        base_url: another endpoint (a proxy, a test server). Without a ``base_url`` an
            API key is required (:class:`MissingCredentialsError`).
        api_version: the API version in the URL path (the SDK's default is ``v1beta``
            on Google's endpoint and ``v1`` with a ``base_url``; a gateway serving
            ``v1beta``, such as LiteLLM's proxy, needs ``api_version="v1beta"``).
        client_args / generate_kwargs: more arguments for ``genai.Client`` (an
            ``http_options`` dict there is merged with ours) / the
            ``GenerateContentConfig`` of every call.
        **kwargs: generation arguments (``max_tokens`` is sent as ``max_output_tokens``,
            ``stop`` as ``stop_sequences``), ``max_retries``, ``timeout``,
            ``custom_role_conversions``, ``retry_policy``, ``structured_output``, and any
            other ``GenerateContentConfig`` field.

    ``structured_model`` uses Gemini's JSON-schema response mode.
    """

    provider = "gemini"
    supports_logprobs = True
    native_structured = True
    json_object_mode = True

    def __init__(
        self,
        model_name: str,
        api_key: str | None = None,
        stream: bool = False,
        thinking_config: dict[str, Any] | None = None,
        base_url: str | None = None,
        api_version: str | None = None,
        cached_content: str | None = None,
        client_args: dict[str, Any] | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        from google import genai
        from google.genai import types

        super().__init__(model_name, stream, generate_kwargs=generate_kwargs, **kwargs)
        self.thinking_config = thinking_config
        self.cached_content = cached_content
        args = self._client_args(client_args)
        args.pop("timeout", None)  # read into self.timeout, sent in http_options
        given = args.pop("http_options", None) or {}
        http_options: dict[str, Any] = {}
        if base_url:
            http_options["base_url"] = base_url
        if api_version:
            http_options["api_version"] = api_version
        self.api_version = api_version
        self.gateway = base_url is not None
        if self.timeout is not None:
            http_options["timeout"] = int(self.timeout * 1000)
        http_options.update(given if isinstance(given, dict) else given.model_dump(
            exclude_none=True))
        vertex = bool(args.get("vertexai") or args.get("credentials"))
        key = self._credential(api_key, "GEMINI_API_KEY", "GOOGLE_API_KEY",
                               required=not (base_url or vertex))
        if key is not None:
            args["api_key"] = key
        elif not vertex:
            args["api_key"] = "not-needed"
        self.client = genai.Client(http_options=types.HttpOptions(**http_options), **args)
        self._ids = itertools.count(1)

    async def aclose(self) -> None:
        await self.client.aio.aclose()

    def _build(self, request: Request) -> tuple[list[Any], Any]:
        from google.genai import types

        system, contents = format_gemini_contents(request.messages)
        config: dict[str, Any] = {}
        if system:
            config["system_instruction"] = system
        if self.cached_content:
            config["cached_content"] = self.cached_content
        if self.thinking_config:
            config["thinking_config"] = types.ThinkingConfig(**self.thinking_config)
        if request.tools:
            config["tools"] = [{"function_declarations": [
                {"name": s.name, "description": s.description,
                 "parameters_json_schema": s.parameters}
                for s in function_specs(request.tools)]}]
            tool_config = _tool_config(request.tool_choice)
            if tool_config:
                config["tool_config"] = tool_config
            config["automatic_function_calling"] = {"disable": True}
        if request.schema is not None:
            config["response_mime_type"] = "application/json"
            config["response_json_schema"] = request.schema.model_json_schema()
        elif request.json_mode:
            config["response_mime_type"] = "application/json"
        given = request.options.given()
        for ours, theirs in (("max_tokens", "max_output_tokens"), ("stop", "stop_sequences")):
            if ours in given:
                given[theirs] = given.pop(ours)
        config.update(given)
        kwargs = dict(request.kwargs)
        if kwargs.pop("logprobs", None):  # the OpenAI names, as every provider takes them
            config["response_logprobs"] = True
        top = kwargs.pop("top_logprobs", None)
        if top:
            config["response_logprobs"] = True
            config["logprobs"] = top
        config.update(kwargs)
        return contents, types.GenerateContentConfig(**config)

    async def create_cache(self, messages: Sequence[Msg | dict[str, Any]],
                           tools: list[dict[str, Any]] | None = None, *,
                           ttl_seconds: int = 3600, use: bool = True) -> str:
        """Store ``messages`` (a leading system prompt included) and ``tools`` as Gemini
        cached content and return its name; with ``use`` this model sends it with every
        call from now on (``cached_content``), so calls send only the newer messages.
        Cache hits come back in ``usage.cached_input_tokens``."""
        from google.genai import types

        system, contents = format_gemini_contents(list(messages))
        config: dict[str, Any] = {"contents": contents, "ttl": f"{int(ttl_seconds)}s"}
        if system:
            config["system_instruction"] = system
        if tools:
            config["tools"] = [{"function_declarations": [
                {"name": s.name, "description": s.description,
                 "parameters_json_schema": s.parameters} for s in function_specs(tools)]}]
        try:
            cache = await self.client.aio.caches.create(
                model=self.model_name, config=types.CreateCachedContentConfig(**config))
        except Exception as exc:
            raise self._map_error(exc) from exc
        name = str(cache.name)
        if use:
            self.cached_content = name
        return name

    async def _count(self, request: Request) -> int | None:
        """``models.count_tokens`` on the contents, the system instruction sent as a
        leading user turn (the Gemini API's count takes no system instruction or tools;
        tools are estimated)."""
        system, contents = format_gemini_contents(request.messages)
        if system:
            contents = [{"role": "user", "parts": [{"text": system}]}, *contents]
        result = await self.client.aio.models.count_tokens(
            model=self.model_name, contents=contents)  # type: ignore[arg-type]
        tools = estimate_tokens([], request.tools) if request.tools else 0
        return int(result.total_tokens or 0) + tools

    def _read_parts(self, parts: Sequence[Any], builder: ResponseBuilder) -> bool:
        grew = False
        for part in parts:
            signature = part.thought_signature
            sig = base64.b64encode(signature).decode() if signature else None
            if part.function_call is not None:
                call = part.function_call
                key = call.id or f"gemini_call_{next(self._ids)}"
                builder.add_tool_call(key, id=key, name=call.name, input=dict(call.args or {}))
            elif part.thought and (part.text or sig):
                builder.add_thinking(part.text or "", signature=sig)
            elif part.text:
                builder.add_text(part.text)
            else:
                continue
            grew = True
        return grew

    def _finish(self, response: Any) -> tuple[str | None, int, int, dict[str, int]]:
        """The finish reason, prompt and output tokens, and the cached / thought counts."""
        candidate = response.candidates[0] if response.candidates else None
        reason = candidate.finish_reason if candidate is not None else None
        usage = response.usage_metadata
        prompt = (usage and usage.prompt_token_count) or 0
        thoughts = (usage and usage.thoughts_token_count) or 0
        output = ((usage and usage.candidates_token_count) or 0) + thoughts
        details = {"cached_input_tokens": (usage and usage.cached_content_token_count) or 0,
                   "reasoning_tokens": thoughts}
        name = getattr(reason, "value", reason)
        return (str(name) if name else None), prompt, output, details

    async def _complete(self, request: Request) -> ChatResponse:
        contents, config = request.payload
        response = await self.client.aio.models.generate_content(
            model=self.model_name, contents=contents, config=config)
        if not response.candidates:
            raise ProviderError(f"no candidates in the response ({response.prompt_feedback})",
                                provider=self.provider, model=self.model_name)
        builder = ResponseBuilder(id=response.response_id,
                                  logprobs=[] if config.response_logprobs else None)
        content = response.candidates[0].content
        self._read_parts((content and content.parts) or [], builder)
        _read_logprobs(response.candidates[0], builder)
        finish, prompt, output, details = self._finish(response)
        final = self._last_chunk(builder, request, finish_reason=finish or "STOP",
                                 input_tokens=prompt, output_tokens=output, details=details)
        return final.model_copy(update={"delta": list(final.content)})

    async def _stream(self, request: Request) -> AsyncGenerator[ChatResponse, None]:
        contents, config = request.payload
        stream = await self.client.aio.models.generate_content_stream(
            model=self.model_name, contents=contents, config=config)
        builder = ResponseBuilder(logprobs=[] if config.response_logprobs else None)
        finish: str | None = None
        prompt = output = 0
        details: dict[str, int] = {}
        try:
            async for response in stream:
                builder.id = builder.id or response.response_id
                candidate = response.candidates[0] if response.candidates else None
                content = candidate.content if candidate is not None else None
                scored = _read_logprobs(candidate, builder)
                if ((content is not None and self._read_parts(content.parts or [], builder))
                        or scored):
                    yield builder.chunk()
                reason, p, o, d = self._finish(response)
                finish = reason or finish
                prompt, output = p or prompt, o or output
                details = d if p else details
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        yield self._last_chunk(builder, request, finish_reason=finish, input_tokens=prompt,
                               output_tokens=output, details=details)

    def _map_error(self, exc: Exception) -> ModelError:
        from google.genai import errors

        if isinstance(exc, errors.APIError):
            headers = getattr(exc.response, "headers", None)
            message = f"HTTP {exc.code}: {exc.message or exc.status or 'no message'}"
            if exc.code in (404, 405) and self.gateway and not self.api_version:
                message += (" (the server at base_url may not serve the SDK's default API "
                            "version: gateways such as LiteLLM's proxy need "
                            "api_version=\"v1beta\")")
            return self._http_error(exc.code, message, headers)
        return self._generic_error(exc)
