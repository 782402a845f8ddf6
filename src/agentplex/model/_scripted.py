"""A deterministic chat model for tests, examples and runtime benchmarks.

:class:`ScriptedChatModel` is a **test double**: it answers from a script (or a function of
the input) without any language model, so runs are exact and instant.
"""

from __future__ import annotations

import inspect
import itertools
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias

from pydantic import BaseModel

from ..message import Block, Msg, TextBlock, ThinkingBlock, ToolUseBlock
from ._base import ChatModelBase, ChatResult, Messages, ToolChoice
from ._response import ChatResponse, ChatUsage
from ._stream import ResponseBuilder

__all__ = ["ScriptedChatModel", "ScriptedFunction", "ScriptedOutput"]

ScriptedOutput: TypeAlias = str | Block | Sequence[Block] | ChatResponse
"""What a script step may be: text, one block, several blocks, or a whole response."""

ScriptedFunction: TypeAlias = Callable[..., ScriptedOutput | Awaitable[ScriptedOutput]]
"""A script as a (sync or async) function of the messages and the call's arguments."""


def _words(text: str) -> int:
    return len(text.split())


def _history_words(messages: Messages) -> int:
    total = 0
    for m in messages:
        if isinstance(m, Msg):
            total += _words(m.get_text_content() or "")
        elif isinstance(m.get("content"), str):
            total += _words(m["content"])
    return total


class ScriptedChatModel(ChatModelBase):
    """Replies from ``script`` in order, or from ``script(messages, **call_kwargs)``.

    Args:
        script: a sequence of replies, or a (sync or async) function receiving the
            ``messages`` and the keyword arguments ``tools``, ``tool_choice`` and
            ``structured_model``, returning a reply.
        stream: stream each reply word by word.
        cycle: start the script again when it runs out (otherwise ``IndexError``).
        model_name: the name reported in responses and traces.

    Usage counts whitespace-separated words. With ``structured_model`` the reply text must
    be JSON for that model; the validated instance goes into ``metadata``.
    """

    provider = "scripted"

    def __init__(
        self,
        script: Sequence[ScriptedOutput] | ScriptedFunction,
        *,
        stream: bool = False,
        cycle: bool = False,
        model_name: str = "scripted",
    ) -> None:
        super().__init__(model_name, stream)
        self._function = script if callable(script) else None
        self._script = list(script) if not callable(script) else []
        self._cycle = cycle
        self._position = 0
        self._ids = itertools.count(1)
        self.calls: list[dict[str, Any]] = []
        """Every call's arguments, for tests to inspect."""

    async def _call(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None,
        tool_choice: ToolChoice | None,
        structured_model: type[BaseModel] | None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls.append(
            {"messages": list(messages), "tools": tools, "tool_choice": tool_choice,
             "structured_model": structured_model, **kwargs}
        )
        reply = await self._next(messages, tools, tool_choice, structured_model)
        blocks = _blocks(reply)
        metadata = reply.metadata if isinstance(reply, ChatResponse) else None
        if structured_model is not None:
            text = "".join(b.text for b in blocks if isinstance(b, TextBlock))
            metadata = structured_model.model_validate(json.loads(text)).model_dump()
        usage = ChatUsage(
            input_tokens=_history_words(messages),
            output_tokens=sum(_words(b.text) for b in blocks if isinstance(b, TextBlock)),
        )
        response_id = f"{self.model_name}-{next(self._ids)}"
        if not self.stream:
            return ChatResponse(id=response_id, content=blocks, delta=blocks, usage=usage,
                                metadata=metadata, finish_reason=_finish(blocks))
        return self._stream(response_id, blocks, usage, metadata)

    async def _next(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None,
        tool_choice: ToolChoice | None,
        structured_model: type[BaseModel] | None,
    ) -> ScriptedOutput:
        if self._function is not None:
            out = self._function(messages, tools=tools, tool_choice=tool_choice,
                                 structured_model=structured_model)
            return await out if inspect.isawaitable(out) else out
        if self._position >= len(self._script):
            if not self._cycle or not self._script:
                raise IndexError(
                    f"ScriptedChatModel {self.model_name!r} ran out of replies after "
                    f"{self._position} calls"
                )
            self._position = 0
        reply = self._script[self._position]
        self._position += 1
        return reply

    async def _stream(
        self,
        response_id: str,
        blocks: list[Block],
        usage: ChatUsage,
        metadata: dict[str, Any] | None,
    ) -> AsyncGenerator[ChatResponse, None]:
        builder = ResponseBuilder(id=response_id)
        for index, block in enumerate(blocks):
            if isinstance(block, TextBlock):
                for piece in _pieces(block.text):
                    builder.add_text(piece)
                    yield builder.chunk()
            elif isinstance(block, ThinkingBlock):
                for piece in _pieces(block.thinking):
                    builder.add_thinking(piece)
                    yield builder.chunk()
            elif isinstance(block, ToolUseBlock):
                raw = json.dumps(block.input, ensure_ascii=False)
                half = len(raw) // 2
                builder.add_tool_call(index, id=block.id, name=block.name, arguments=raw[:half])
                yield builder.chunk()
                builder.add_tool_call(index, arguments=raw[half:])
                yield builder.chunk()
        yield builder.chunk(is_last=True, usage=usage, metadata=metadata,
                            finish_reason=_finish(blocks))


def _pieces(text: str) -> list[str]:
    """Split text into word-sized pieces that join back to exactly ``text``."""
    pieces: list[str] = []
    start = 0
    for i in range(1, len(text)):
        if text[i] == " " and text[i - 1] != " ":
            pieces.append(text[start:i])
            start = i
    pieces.append(text[start:])
    return [p for p in pieces if p]


def _blocks(reply: ScriptedOutput) -> list[Block]:
    if isinstance(reply, str):
        return [TextBlock(text=reply)]
    if isinstance(reply, ChatResponse):
        return list(reply.content)
    if isinstance(reply, Sequence):
        return [TextBlock(text=b) if isinstance(b, str) else b for b in reply]
    return [reply]


def _finish(blocks: list[Block]) -> str:
    return "tool_calls" if any(isinstance(b, ToolUseBlock) for b in blocks) else "stop"
