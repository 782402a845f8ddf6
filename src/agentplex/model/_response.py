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
    """Token counts and wall time of one model call.

    ``input_tokens`` counts every prompt token, cached ones included; of those,
    ``cached_input_tokens`` were read from the provider's prompt cache and
    ``cache_creation_input_tokens`` written to it (Anthropic). ``output_tokens`` counts
    every generated token, reasoning included; ``reasoning_tokens`` says how many of them
    were reasoning.
    """

    model_config = ConfigDict(extra="forbid")

    input_tokens: int = 0
    output_tokens: int = 0
    time: float = 0.0
    """Seconds from the request to the last byte of the response."""
    type: Literal["chat"] = "chat"
    metadata: dict[str, Any] | None = None
    cached_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input and output tokens together."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: ChatUsage) -> ChatUsage:
        metadata = {**(self.metadata or {}), **(other.metadata or {})}
        return ChatUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            time=self.time + other.time,
            metadata=metadata or None,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            cache_creation_input_tokens=(self.cache_creation_input_tokens
                                         + other.cache_creation_input_tokens),
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )

    def usage_metadata(self) -> dict[str, Any]:
        """The counts in LangChain's ``usage_metadata`` shape."""
        return {
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "input_token_details": {"cache_read": self.cached_input_tokens,
                                    "cache_creation": self.cache_creation_input_tokens},
            "output_token_details": {"reasoning": self.reasoning_tokens},
        }


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
    def usage_metadata(self) -> dict[str, Any] | None:
        """The usage in LangChain's shape (``total_tokens``, cache and reasoning details)."""
        return self.usage.usage_metadata() if self.usage is not None else None

    @property
    def thinking(self) -> str:
        """The thinking blocks of ``content`` joined together."""
        return "".join(b.thinking for b in self.content if isinstance(b, ThinkingBlock))
