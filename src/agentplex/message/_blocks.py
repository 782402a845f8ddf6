"""Content blocks: the typed parts a :class:`~agentplex.message.Msg` is made of.

Blocks form a discriminated union on ``type``. They are pydantic models, and they also
answer ``block["field"]`` / ``block.get("field")`` so code written against dict-shaped
blocks (AgentScope's ``TypedDict`` blocks) keeps working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "AudioBlock",
    "Base64Source",
    "Block",
    "ContentBlock",
    "ImageBlock",
    "MediaSource",
    "TextBlock",
    "ThinkingBlock",
    "ToolResultBlock",
    "ToolUseBlock",
    "URLSource",
    "VideoBlock",
    "block_adapter",
]


class _Part(BaseModel):
    """Shared behaviour of blocks and sources: frozen-free pydantic with dict-style access."""

    model_config = ConfigDict(extra="forbid")

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """Return field ``key``, or ``default`` when the block has no such field."""
        return getattr(self, key, default) if key in type(self).model_fields else default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in type(self).model_fields


class Base64Source(_Part):
    """Media inlined as base64 text with its MIME type."""

    type: Literal["base64"] = "base64"
    media_type: str
    data: str


class URLSource(_Part):
    """Media referenced by URL (``http(s)://``, ``file://`` or a data URL)."""

    type: Literal["url"] = "url"
    url: str


MediaSource: TypeAlias = Annotated[Union[Base64Source, URLSource], Field(discriminator="type")]


class TextBlock(_Part):
    """Plain text."""

    type: Literal["text"] = "text"
    text: str


class ThinkingBlock(_Part):
    """A model's reasoning. ``signature`` carries a provider's opaque proof (Anthropic)."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str | None = None


class ToolUseBlock(_Part):
    """A request to call tool ``name`` with ``input``; ``raw_input`` keeps the unparsed text."""

    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)
    raw_input: str | None = None


class ImageBlock(_Part):
    """An image, inline or by URL."""

    type: Literal["image"] = "image"
    source: MediaSource


class AudioBlock(_Part):
    """A sound clip, inline or by URL."""

    type: Literal["audio"] = "audio"
    source: MediaSource


class VideoBlock(_Part):
    """A video, inline or by URL."""

    type: Literal["video"] = "video"
    source: MediaSource


ToolOutputBlock: TypeAlias = Annotated[
    Union[TextBlock, ImageBlock, AudioBlock, VideoBlock], Field(discriminator="type")
]


class ToolResultBlock(_Part):
    """The result of the tool call ``id``: text, or a list of text and media blocks."""

    type: Literal["tool_result"] = "tool_result"
    id: str
    name: str
    output: str | list[ToolOutputBlock]
    is_error: bool = False


ContentBlock: TypeAlias = Annotated[
    Union[
        TextBlock,
        ThinkingBlock,
        ToolUseBlock,
        ToolResultBlock,
        ImageBlock,
        AudioBlock,
        VideoBlock,
    ],
    Field(discriminator="type"),
]
"""Any content block, discriminated on ``type``."""

Block: TypeAlias = Union[
    TextBlock, ThinkingBlock, ToolUseBlock, ToolResultBlock, ImageBlock, AudioBlock, VideoBlock
]

block_adapter: TypeAdapter[Block] = TypeAdapter(ContentBlock)
"""Validates a dict (or block) into the matching block class."""
