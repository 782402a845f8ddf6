"""Turning a local model's text into blocks: ``<think>`` sections and ``<tool_call>`` calls.

:class:`OutputAssembler` is fed the growing output text and adds only what is new to a
:class:`ResponseBuilder`, holding back a tag that might still be half written, so streamed
chunks and the final response agree.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from .._stream import ResponseBuilder
from ._constraints import TOOL_CALL_BEGIN, TOOL_CALL_END

__all__ = ["OutputAssembler", "split_output"]

THINK_BEGIN = "<think>"
THINK_END = "</think>"


def _hold(text: str, tags: tuple[str, ...]) -> str:
    """``text`` without a trailing partial tag."""
    for k in range(min(max(len(t) for t in tags) - 1, len(text)), 0, -1):
        if any(t.startswith(text[-k:]) for t in tags):
            return text[:-k]
    return text


def split_output(text: str, *, final: bool, thinking: bool = False) -> list[tuple[str, str]]:
    """Split ``text`` into ``(kind, text)`` parts: ``text``, ``thinking`` or ``tool`` (JSON).

    ``thinking`` says the prompt already opened a ``<think>`` section. Unless ``final``, a
    trailing partial tag and an unfinished tool call are left out.
    """
    parts: list[tuple[str, str]] = []
    pos = 0
    while pos <= len(text):
        if thinking:
            end = text.find(THINK_END, pos)
            if end < 0:
                rest = text[pos:]
                parts.append(("thinking", rest if final else _hold(rest, (THINK_END,))))
                break
            parts.append(("thinking", text[pos:end]))
            pos, thinking = end + len(THINK_END), False
            continue
        hits = [i for i in (text.find(THINK_BEGIN, pos), text.find(TOOL_CALL_BEGIN, pos)) if i >= 0]
        if not hits:
            rest = text[pos:]
            parts.append(("text", rest if final else _hold(rest, (THINK_BEGIN, TOOL_CALL_BEGIN))))
            break
        at = min(hits)
        parts.append(("text", text[pos:at]))
        if text.startswith(THINK_BEGIN, at):
            pos, thinking = at + len(THINK_BEGIN), True
            continue
        close = text.find(TOOL_CALL_END, at)
        if close < 0:
            if final:
                parts.append(("text", text[at:]))
            break
        parts.append(("tool", text[at + len(TOOL_CALL_BEGIN):close]))
        pos = close + len(TOOL_CALL_END)
    cleaned: list[tuple[str, str]] = []
    for kind, value in parts:
        if kind != "tool":
            value = value.lstrip() if not cleaned or cleaned[-1][0] != kind else value
        if not value:
            continue
        if cleaned and cleaned[-1][0] == kind == "text":
            cleaned[-1] = (kind, cleaned[-1][1] + value)
        else:
            cleaned.append((kind, value))
    return cleaned


def _parse_call(raw: str) -> tuple[str, dict[str, Any]] | None:
    try:
        call = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    args = call.get("arguments", call.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    return (call["name"], args) if isinstance(args, dict) else None


@dataclass
class OutputAssembler:
    """Feeds the growing output text into ``builder``, one new piece at a time."""

    builder: ResponseBuilder
    thinking: bool = False
    parse_tools: bool = True
    _sent: list[tuple[str, int]] = field(default_factory=list)

    def update(self, text: str, *, final: bool) -> bool:
        """Add what ``text`` holds beyond what was already added; say whether there was any."""
        added = False
        if self.parse_tools:
            parts = split_output(text, final=final, thinking=self.thinking)
        else:
            parts = [("text", text)] if text else []
        for index, (kind, value) in enumerate(parts):
            if index < len(self._sent):
                seen = self._sent[index][1]
                if kind != "tool" and len(value) > seen:
                    self._add(kind, value[seen:], index)
                    self._sent[index] = (kind, len(value))
                    added = True
                continue
            self._sent.append((kind, len(value)))
            self._add(kind, value, index)
            added = True
        return added

    def _add(self, kind: str, value: str, index: int) -> None:
        if kind == "thinking":
            self.builder.add_thinking(value)
        elif kind == "text":
            self.builder.add_text(value)
        else:
            call = _parse_call(value)
            if call is None:
                self.builder.add_text(f"{TOOL_CALL_BEGIN}{value}{TOOL_CALL_END}")
            else:
                self.builder.add_tool_call(index, id=f"call_{uuid.uuid4().hex[:24]}",
                                           name=call[0], input=call[1])
