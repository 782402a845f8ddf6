"""What a chat model returns: :class:`ChatResponse` and :class:`ChatUsage`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..message import ContentBlock, TextBlock, ThinkingBlock, ToolUseBlock, register_wire_type

__all__ = ["ChatResponse", "ChatUsage", "TokenLogprob", "TopLogprob"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@register_wire_type
class ChatUsage(BaseModel):
    """Token counts and wall time of one model call."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: int = 0
    output_tokens: int = 0
    time: float = 0.0
    """Seconds from the request to the last byte of the response."""
    type: Literal["chat"] = "chat"
    metadata: dict[str, Any] | None = None

    def __add__(self, other: ChatUsage) -> ChatUsage:
        return ChatUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            time=self.time + other.time,
        )


@register_wire_type
class TopLogprob(BaseModel):
    """One of the most likely tokens at a position, with its log-probability."""

    model_config = ConfigDict(extra="forbid")

    token: str
    logprob: float


@register_wire_type
class TokenLogprob(BaseModel):
    """The log-probability of one output token, and the ``top_logprobs`` most likely
    alternatives at its position (when asked for)."""

    model_config = ConfigDict(extra="forbid")

    token: str
    logprob: float
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


@register_wire_type
class ChatResponse(BaseModel):
    """One chat model response, or one chunk of a streamed response.

    When streaming, every chunk's ``content`` holds the whole response so far (as in the
    reference API) and ``delta`` holds only what this chunk added; the final chunk has
    ``is_last=True``. A tool_use block's ``input`` is filled in once its arguments are
    complete; until then ``raw_input`` holds the partial text. Parsed structured output
    goes in ``metadata``. ``logprobs`` (when the call asked with ``logprobs=True``) holds
    one entry per output token so far, like ``content``.
    """

    model_config = ConfigDict(extra="forbid")

    content: list[ContentBlock] = Field(default_factory=list)
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = Field(default_factory=_now)
    type: Literal["chat"] = "chat"
    usage: ChatUsage | None = None
    metadata: dict[str, Any] | None = None
    delta: list[ContentBlock] = Field(default_factory=list)
    is_last: bool = True
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    @property
    def text(self) -> str:
        """The text blocks of ``content`` joined together."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def tool_calls(self) -> list[ToolUseBlock]:
        """The tool_use blocks of ``content``."""
        return [b for b in self.content if isinstance(b, ToolUseBlock)]

    @property
    def thinking(self) -> str:
        """The thinking blocks of ``content`` joined together."""
        return "".join(b.thinking for b in self.content if isinstance(b, ThinkingBlock))
