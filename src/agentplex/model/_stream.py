"""Builds streamed :class:`ChatResponse` chunks from provider deltas.

Every provider module feeds the pieces its wire format delivers (text, thinking, partial
tool-call arguments) into a :class:`ResponseBuilder` and emits :meth:`ResponseBuilder.chunk`
results, so all providers keep the same streaming contract: ``content`` so far, ``delta``
new, ``is_last`` at the end, tool arguments parsed once complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..message import Block, TextBlock, ThinkingBlock, ToolUseBlock
from ._response import ChatResponse, ChatUsage, TokenLogprob, TopLogprob

__all__ = ["ResponseBuilder", "parse_tool_arguments", "token_logprobs"]


def _get(obj: Any, *names: str) -> Any:
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def token_logprobs(entries: Any) -> list[TokenLogprob]:
    """Read a wire's per-token log-probabilities: objects or dicts with ``token``,
    ``logprob`` and ``top_logprobs`` (OpenAI, Hugging Face, Ollama)."""
    return [TokenLogprob(token=_get(e, "token") or "", logprob=float(_get(e, "logprob")),
                         top_logprobs=[TopLogprob(token=_get(t, "token") or "",
                                                  logprob=float(_get(t, "logprob")))
                                       for t in _get(e, "top_logprobs") or []])
            for e in entries or []]


def parse_tool_arguments(raw: str | None) -> dict[str, Any]:
    """Parse complete tool-call argument text into a dict.

    Empty text is ``{}``. Raises ``ValueError`` when the text is not a JSON object.
    """
    if raw is None or not raw.strip():
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"tool arguments must be a JSON object, got {type(value).__name__}")
    return value


@dataclass
class _ToolCall:
    id: str
    name: str
    raw: str = ""
    input: dict[str, Any] | None = None


@dataclass
class ResponseBuilder:
    """Accumulates one response from deltas, in the order they arrive."""

    id: str | None = None
    logprobs: list[TokenLogprob] | None = None
    """Set to a list to collect log-probabilities (:meth:`add_logprobs`)."""
    _parts: list[Block | _ToolCall] = field(default_factory=list)
    _pending: list[Block] = field(default_factory=list)
    _tools: dict[Any, _ToolCall] = field(default_factory=dict)

    def add_text(self, text: str) -> None:
        """Append text to the response."""
        if not text:
            return
        last = self._parts[-1] if self._parts else None
        if isinstance(last, TextBlock):
            last.text += text
        else:
            self._parts.append(TextBlock(text=text))
        self._pending.append(TextBlock(text=text))

    def add_thinking(self, text: str, signature: str | None = None) -> None:
        """Append reasoning text (and the provider's signature when it arrives)."""
        if not text and signature is None:
            return
        last = self._parts[-1] if self._parts else None
        if isinstance(last, ThinkingBlock):
            last.thinking += text
            if signature is not None:
                last.signature = signature
        else:
            self._parts.append(ThinkingBlock(thinking=text, signature=signature))
        self._pending.append(ThinkingBlock(thinking=text, signature=signature))

    def add_logprobs(self, entries: list[TokenLogprob]) -> None:
        """Append the log-probabilities of new tokens."""
        if self.logprobs is None:
            self.logprobs = []
        self.logprobs.extend(entries)

    def add_tool_call(
        self,
        key: Any,
        *,
        id: str | None = None,
        name: str | None = None,
        arguments: str = "",
        input: dict[str, Any] | None = None,
    ) -> None:
        """Start or extend the tool call ``key`` (a provider's index or id).

        ``arguments`` is a fragment of the JSON argument text; ``input`` a complete,
        already parsed argument object (for providers that send one).
        """
        call = self._tools.get(key)
        if call is None:
            call = _ToolCall(id=id or str(key), name=name or "")
            self._tools[key] = call
            self._parts.append(call)
        else:
            if id:
                call.id = id
            if name and not call.name:
                call.name = name
        call.raw += arguments
        if input is not None:
            call.input = input
            if not call.raw:
                call.raw = json.dumps(input, ensure_ascii=False)
        self._pending.append(
            ToolUseBlock(id=call.id, name=call.name, input={}, raw_input=arguments or None)
        )

    def _content(self, final: bool) -> list[Block]:
        out: list[Block] = []
        for part in self._parts:
            if isinstance(part, _ToolCall):
                parsed: dict[str, Any] = {}
                if final:
                    parsed = (part.input if part.input is not None
                              else parse_tool_arguments(part.raw))
                out.append(ToolUseBlock(id=part.id, name=part.name, input=parsed,
                                        raw_input=part.raw))
            else:
                out.append(part.model_copy())
        return out

    def chunk(
        self,
        *,
        is_last: bool = False,
        usage: ChatUsage | None = None,
        finish_reason: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ChatResponse:
        """Return a chunk with everything so far and the delta since the previous chunk.

        On the last chunk tool arguments are parsed; text that is not a JSON object raises
        ``ValueError``.
        """
        delta, self._pending = self._pending, []
        kwargs: dict[str, Any] = {}
        if self.id is not None:
            kwargs["id"] = self.id
        return ChatResponse(
            content=self._content(is_last),
            delta=delta,
            is_last=is_last,
            usage=usage,
            finish_reason=finish_reason,
            metadata=metadata,
            logprobs=list(self.logprobs) if self.logprobs is not None else None,
            **kwargs,
        )
