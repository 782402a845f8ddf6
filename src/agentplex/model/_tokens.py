"""Counting a history's tokens: :class:`TokenCounting` and :func:`estimate_tokens`.

Every chat model has ``await model.count_tokens(messages, tools)``. Providers with a count
endpoint use it (Anthropic's ``messages.count_tokens``, Gemini's ``count_tokens``), local
models their tokenizer, and the rest this module's estimate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
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

__all__ = ["CHARS_PER_TOKEN", "TokenCounting", "estimate_text_tokens", "estimate_tokens"]

CHARS_PER_TOKEN = 4.0
"""The usual ratio for English text and code under BPE tokenizers."""
_PER_MESSAGE = 4  # role and separators
_MEDIA = {ImageBlock: 256, AudioBlock: 512, VideoBlock: 2048}


def _block_chars(block: Any) -> tuple[int, int]:
    """``(characters, fixed tokens)`` of one content block."""
    if isinstance(block, TextBlock):
        return len(block.text), 0
    if isinstance(block, ThinkingBlock):
        return len(block.thinking), 0
    if isinstance(block, ToolUseBlock):
        return len(block.name) + len(json.dumps(block.input, ensure_ascii=False)), 4
    if isinstance(block, ToolResultBlock):
        if isinstance(block.output, str):
            return len(block.output), 4
        chars = fixed = 0
        for inner in block.output:
            c, f = _block_chars(inner)
            chars, fixed = chars + c, fixed + f
        return chars, fixed + 4
    for kind, tokens in _MEDIA.items():
        if isinstance(block, kind):
            return 0, tokens
    return len(str(block)), 0


def estimate_tokens(messages: Sequence[Msg | dict[str, Any]],
                    tools: Sequence[dict[str, Any]] | None = None) -> int:
    """An estimate of the prompt tokens of ``messages`` and ``tools``, without a tokenizer:
    text at :data:`CHARS_PER_TOKEN`, media at a fixed cost, a few tokens per message."""
    chars = 0
    fixed = 0
    for msg in messages:
        fixed += _PER_MESSAGE
        if isinstance(msg, dict):
            content = msg.get("content")
            chars += len(content) if isinstance(content, str) else len(
                json.dumps(content, ensure_ascii=False, default=str))
            continue
        chars += len(msg.name)
        if isinstance(msg.content, str):  # one text block, without building it
            chars += len(msg.content)
            continue
        for block in msg.content:
            c, f = _block_chars(block)
            chars, fixed = chars + c, fixed + f
    if tools:
        chars += len(json.dumps(list(tools), ensure_ascii=False))
    return fixed + math.ceil(chars / CHARS_PER_TOKEN)


def estimate_text_tokens(messages: Sequence[tuple[str, str]]) -> int:
    """:func:`estimate_tokens` of text messages given as ``(name, text)`` pairs, without
    building them."""
    chars = sum(len(name) + len(text) for name, text in messages)
    return _PER_MESSAGE * len(messages) + math.ceil(chars / CHARS_PER_TOKEN)


class TokenCounting:
    """``count_tokens``, mixed into :class:`~agentplex.model.ChatModelBase`; providers with a
    count endpoint or a tokenizer override it."""

    async def count_tokens(self, messages: Sequence[Msg | dict[str, Any]],
                           tools: Sequence[dict[str, Any]] | None = None) -> int:
        """The prompt tokens ``messages`` (and ``tools``) take for this model (here an
        :func:`estimate_tokens`; see the provider's docstring for how it counts)."""
        return estimate_tokens(messages, tools)

    async def get_num_tokens_from_messages(
        self, messages: Sequence[Msg | dict[str, Any]],
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> int:
        """LangChain's name for :meth:`count_tokens`."""
        return await self.count_tokens(messages, tools)
