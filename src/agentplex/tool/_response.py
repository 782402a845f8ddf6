""":class:`ToolResponse`: what one tool call returns, possibly in several streamed chunks."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from pydantic import BaseModel

from ..message import (
    AudioBlock,
    Base64Source,
    ImageBlock,
    TextBlock,
    ToolResultBlock,
    VideoBlock,
)

__all__ = ["OutputBlock", "ToolResponse", "to_tool_response"]

OutputBlock: TypeAlias = TextBlock | ImageBlock | AudioBlock | VideoBlock
"""The blocks a tool result may hold."""

_MEDIA: dict[str, type[ImageBlock | AudioBlock | VideoBlock]] = {
    "image": ImageBlock, "audio": AudioBlock, "video": VideoBlock}


@dataclass
class ToolResponse:
    """The result of a tool call so far.

    A generator tool yields its whole result so far at each step (text, blocks or
    responses); the toolkit passes each on with ``is_last=False`` and ends with one that
    has ``is_last=True``. ``is_error`` marks results that
    report a failure (bad arguments, an exception, a timeout), ``is_interrupted`` ones cut
    short by an interrupt.
    """

    content: list[OutputBlock] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    stream: bool = False
    is_last: bool = True
    is_error: bool = False
    is_interrupted: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def text(self) -> str:
        """The text blocks of the result joined together."""
        return "\n".join(b.text for b in self.content if isinstance(b, TextBlock))

    def to_block(self, call_id: str, name: str) -> ToolResultBlock:
        """The ``tool_result`` block answering tool call ``call_id``."""
        only_text = all(isinstance(b, TextBlock) for b in self.content)
        output: Any = self.text if only_text else [b.model_copy() for b in self.content]
        return ToolResultBlock(id=call_id, name=name, output=output, is_error=self.is_error)

    @classmethod
    def error(cls, text: str) -> ToolResponse:
        """An error result whose text the model can read."""
        return cls(content=[TextBlock(text=text)], is_error=True)


def to_tool_response(value: Any, media: str | None = None) -> ToolResponse:
    """Turn what a tool returned into a :class:`ToolResponse`.

    Accepts a response, a string, a block or a list of blocks, bytes (wrapped as ``media``
    — ``image``, ``audio`` or ``video`` — when given), a pydantic model or anything JSON
    can encode (dumped as text).
    """
    if isinstance(value, ToolResponse):
        return value
    if value is None:
        return ToolResponse(content=[])
    if isinstance(value, TextBlock | ImageBlock | AudioBlock | VideoBlock):
        return ToolResponse(content=[value])
    if isinstance(value, list) and value and all(
        isinstance(b, (TextBlock, ImageBlock, AudioBlock, VideoBlock)) for b in value
    ):
        return ToolResponse(content=list(value))
    if isinstance(value, bytes) and media in _MEDIA:
        kind = media or "image"
        source = Base64Source(media_type=_sniff(value, kind),
                              data=base64.b64encode(value).decode("ascii"))
        return ToolResponse(content=[_MEDIA[kind](source=source)])
    if isinstance(value, str):
        return ToolResponse(content=[TextBlock(text=value)])
    if isinstance(value, BaseModel):
        return ToolResponse(content=[TextBlock(text=value.model_dump_json())])
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = str(value)
    return ToolResponse(content=[TextBlock(text=text)])


def _sniff(data: bytes, kind: str) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data.startswith(b"GIF8"):
        return "image/gif"
    if data.startswith(b"RIFF") and data[8:12] == b"WAVE":
        return "audio/wav"
    if data.startswith((b"ID3", b"\xff\xfb")):
        return "audio/mpeg"
    return {"image": "image/png", "audio": "audio/wav", "video": "video/mp4"}[kind]
