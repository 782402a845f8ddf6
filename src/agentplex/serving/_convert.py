"""Between the OpenAI wire and our model contract: requests to ``Msg`` histories and call
arguments, :class:`ChatResponse` objects to completions and server-sent chunks."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ..message import (
    AudioBlock,
    Base64Source,
    Block,
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)
from ..model import ChatResponse, ChatUsage, TokenLogprob
from ..model.lowlevel import parse_tool_arguments
from ._errors import BadChatRequest
from .schema import (
    AssistantMessage,
    AudioPart,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    DeltaFunction,
    DeltaToolCall,
    FunctionCall,
    ImagePart,
    NamedToolChoice,
    ToolCall,
    Usage,
    WireLogprob,
    WireTopLogprob,
)

__all__ = ["CallArguments", "ChunkWriter", "call_arguments", "completion"]


@dataclass
class CallArguments:
    """What one request asks of a :class:`ChatModelBase`."""

    messages: list[Msg]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


def _media(url: str, param: str) -> ImageBlock:
    if url.startswith("data:"):
        header, sep, data = url.partition(",")
        if not sep or ";base64" not in header:
            raise BadChatRequest("image data URLs must be base64 (data:<type>;base64,...)", param)
        media_type = header[5:].split(";")[0] or "image/png"
        return ImageBlock(source=Base64Source(media_type=media_type, data=data))
    if not url.startswith(("http://", "https://")):
        raise BadChatRequest("image_url must be an http(s) URL or a base64 data URL", param)
    return ImageBlock(source=URLSource(url=url))


def _user_content(message: ChatMessage, param: str) -> str | list[Block]:
    if isinstance(message.content, str) or message.content is None:
        return message.content or ""
    blocks: list[Block] = []
    for i, part in enumerate(message.content):
        if isinstance(part, ImagePart):
            blocks.append(_media(part.image_url.url, f"{param}.content.{i}.image_url"))
        elif isinstance(part, AudioPart):
            blocks.append(AudioBlock(source=Base64Source(
                media_type=f"audio/{part.input_audio.format}", data=part.input_audio.data)))
        else:
            blocks.append(TextBlock(text=part.text))
    return blocks


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, list):
        return "\n".join(p.text for p in message.content if p.type == "text")
    return message.content or ""


def _history(messages: list[ChatMessage]) -> list[Msg]:
    names: dict[str, str] = {}
    out: list[Msg] = []
    for i, m in enumerate(messages):
        param = f"messages.{i}"
        if m.role in ("system", "developer"):
            out.append(Msg(m.name or "system", _text(m), "system"))
        elif m.role == "user":
            out.append(Msg(m.name or "user", _user_content(m, param), "user"))
        elif m.role == "assistant":
            blocks: list[Block] = []
            text = _text(m)
            if text:
                blocks.append(TextBlock(text=text))
            for call in m.tool_calls or []:
                try:
                    arguments = parse_tool_arguments(call.function.arguments)
                except ValueError as exc:
                    raise BadChatRequest(f"tool call arguments are not a JSON object: {exc}",
                                          f"{param}.tool_calls") from exc
                names[call.id] = call.function.name
                blocks.append(ToolUseBlock(id=call.id, name=call.function.name,
                                           input=arguments, raw_input=call.function.arguments))
            out.append(Msg(m.name or "assistant", blocks, "assistant"))
        else:
            assert m.tool_call_id is not None
            name = m.name or names.get(m.tool_call_id)
            if name is None:
                raise BadChatRequest(f"tool message answers {m.tool_call_id!r}, which no earlier "
                                      "assistant tool call has", f"{param}.tool_call_id")
            out.append(Msg("system", [ToolResultBlock(id=m.tool_call_id, name=name,
                                                      output=_text(m))], "system"))
    return out


def _response_format(request: ChatCompletionRequest) -> dict[str, Any] | None:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_schema":
        assert fmt.json_schema is not None
        return {"type": "json_schema", "json_schema": {
            "name": fmt.json_schema.name, "schema": fmt.json_schema.schema_,
            **({"strict": fmt.json_schema.strict} if fmt.json_schema.strict is not None else {}),
        }}
    if fmt.type == "json":
        value = json.loads(fmt.value) if isinstance(fmt.value, str) else fmt.value
        return {"type": "json_schema", "json_schema": {"name": "response",
                                                       "schema": value or {"type": "object"}}}
    if fmt.type == "regex":
        return {"type": "regex", "value": fmt.value}
    return {"type": "json_object"}


def call_arguments(request: ChatCompletionRequest) -> CallArguments:
    """The model call a request stands for (raises :class:`BadChatRequest`)."""
    tools = [t.model_dump(exclude_none=True) for t in request.tools] if request.tools else None
    choice = request.tool_choice
    tool_choice = choice.function.name if isinstance(choice, NamedToolChoice) else choice
    kwargs: dict[str, Any] = {}
    max_tokens = request.max_completion_tokens or request.max_tokens
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    for name in ("temperature", "top_p", "seed", "stop"):
        value = getattr(request, name)
        if value is not None:
            kwargs[name] = value
    if request.logprobs:
        kwargs["logprobs"] = True
        if request.top_logprobs:
            kwargs["top_logprobs"] = request.top_logprobs
    try:
        fmt = _response_format(request)
    except ValueError as exc:
        raise BadChatRequest(f"response_format value is not a JSON schema: {exc}",
                              "response_format") from exc
    if fmt is not None:
        kwargs["response_format"] = fmt
    return CallArguments(_history(request.messages), tools, tool_choice, kwargs)


# -- answers -------------------------------------------------------------------------------


def finish_reason(response: ChatResponse) -> str:
    """The wire's finish reason for a final response."""
    if response.tool_calls:
        return "tool_calls"
    reason = (response.finish_reason or "stop").lower()
    if reason in ("length", "max_tokens", "max_output_tokens"):
        return "length"
    if reason in ("content_filter", "safety"):
        return "content_filter"
    return "stop"


def usage(value: ChatUsage | None) -> Usage | None:
    if value is None:
        return None
    return Usage(prompt_tokens=value.input_tokens, completion_tokens=value.output_tokens,
                 total_tokens=value.input_tokens + value.output_tokens)


def _logprobs(entries: list[TokenLogprob] | None) -> ChoiceLogprobs | None:
    if entries is None:
        return None
    return ChoiceLogprobs(content=[
        WireLogprob(token=e.token, logprob=e.logprob, bytes=list(e.token.encode()),
                    top_logprobs=[WireTopLogprob(token=t.token, logprob=t.logprob,
                                                 bytes=list(t.token.encode()))
                                  for t in e.top_logprobs])
        for e in entries])


def _arguments(block: ToolUseBlock) -> str:
    return block.raw_input or json.dumps(block.input, ensure_ascii=False)


def _fragment(block: ToolUseBlock) -> str:
    """A first tool-call delta's argument text (a whole call's when it came in one piece)."""
    if block.raw_input is not None:
        return block.raw_input
    return json.dumps(block.input, ensure_ascii=False) if block.input else ""


def completion(response: ChatResponse, model: str, *, created: int | None = None,
               logprobs: bool = False) -> ChatCompletion:
    """A final :class:`ChatResponse` as the wire's completion object (with its
    log-probabilities when the request asked for them)."""
    text = response.text
    calls = [ToolCall(id=b.id, function=FunctionCall(name=b.name, arguments=_arguments(b)))
             for b in response.tool_calls]
    message = AssistantMessage(content=text if text or not calls else None,
                               reasoning_content=response.thinking or None,
                               tool_calls=calls or None)
    return ChatCompletion(
        id=f"chatcmpl-{response.id}", created=created or int(time.time()), model=model,
        choices=[Choice(message=message, finish_reason=finish_reason(response),
                        logprobs=_logprobs(response.logprobs) if logprobs else None)],
        usage=usage(response.usage),
    )


def sse(payload: str) -> bytes:
    """One server-sent event carrying ``payload``."""
    return b"data: " + payload.encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


class ChunkWriter:
    """Turns the chunks of one streamed :class:`ChatResponse` into server-sent events."""

    def __init__(self, model: str, *, include_usage: bool, logprobs: bool = False) -> None:
        self.model = model
        self.include_usage = include_usage
        self.logprobs = logprobs
        self.created = int(time.time())
        self.id = ""
        self._tool_index: dict[str, int] = {}
        self._logprobs_sent = 0

    def _event(self, choices: list[ChunkChoice], usage_: Usage | None = None) -> bytes:
        chunk = ChatCompletionChunk(id=self.id, created=self.created, model=self.model,
                                    choices=choices, usage=usage_)
        return sse(chunk.model_dump_json(exclude_none=True))

    def first(self, response: ChatResponse) -> bytes:
        """The opening event (the assistant role)."""
        self.id = f"chatcmpl-{response.id}"
        return self._event([ChunkChoice(delta=Delta(role="assistant", content=""))])

    def _new_logprobs(self, response: ChatResponse) -> ChoiceLogprobs | None:
        if (not self.logprobs or response.logprobs is None
                or len(response.logprobs) <= self._logprobs_sent):
            return None
        new = response.logprobs[self._logprobs_sent:]
        self._logprobs_sent = len(response.logprobs)
        return _logprobs(new)

    def _delta(self, response: ChatResponse) -> Delta | None:
        text: list[str] = []
        thinking: list[str] = []
        calls: list[DeltaToolCall] = []
        for block in response.delta:
            if isinstance(block, TextBlock):
                text.append(block.text)
            elif isinstance(block, ThinkingBlock):
                thinking.append(block.thinking)
            elif isinstance(block, ToolUseBlock):
                index = self._tool_index.get(block.id)
                if index is None:
                    index = self._tool_index[block.id] = len(self._tool_index)
                    calls.append(DeltaToolCall(index=index, id=block.id, type="function",
                                               function=DeltaFunction(
                                                   name=block.name,
                                                   arguments=_fragment(block))))
                else:
                    calls.append(DeltaToolCall(index=index, function=DeltaFunction(
                        arguments=block.raw_input or "")))
        if not (text or thinking or calls):
            return None
        return Delta(content="".join(text) or None, reasoning_content="".join(thinking) or None,
                     tool_calls=calls or None)

    def chunk(self, response: ChatResponse) -> bytes | None:
        """The event for one chunk, or ``None`` when it added nothing to send."""
        delta = self._delta(response)
        logprobs = self._new_logprobs(response)
        if delta is None and logprobs is None:
            return None
        return self._event([ChunkChoice(delta=delta or Delta(), logprobs=logprobs)])

    def last(self, response: ChatResponse) -> list[bytes]:
        """The events closing the stream: the last delta, the finish reason, the usage."""
        events = []
        # Tool calls announced only in the final content (never in a delta) still go out.
        for block in response.tool_calls:
            if block.id not in self._tool_index and not any(
                    isinstance(b, ToolUseBlock) and b.id == block.id for b in response.delta):
                response = response.model_copy(update={"delta": [*response.delta, block]})
        delta = self.chunk(response)
        if delta is not None:
            events.append(delta)
        events.append(self._event([ChunkChoice(delta=Delta(),
                                               finish_reason=finish_reason(response))]))
        if self.include_usage:
            events.append(self._event([], usage(response.usage) or Usage()))
        events.append(DONE)
        return events
