""":class:`ToolResponse`: what one tool call returns, possibly in several streamed chunks."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from pydantic import BaseModel

from ..message import AudioBlock, ImageBlock, TextBlock, ToolResultBlock, VideoBlock
from ._types import AgentType, as_numpy, is_array, media_block

__all__ = ["OutputBlock", "ToolResponse", "to_tool_response"]

OutputBlock: TypeAlias = TextBlock | ImageBlock | AudioBlock | VideoBlock
"""The blocks a tool result may hold."""

_BLOCKS = (TextBlock, ImageBlock, AudioBlock, VideoBlock)
_ARRAY_AS_JSON = 4096
"""Arrays up to this many elements return as JSON lists; larger ones as a summary."""


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
    value: Any = None
    """What the tool returned, when it was plain data (kept in-process only: code agents
    hand it to the code as is)."""

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


def to_tool_response(value: Any, media: str | None = None,
                     samplerate: int = 16000) -> ToolResponse:
    """Turn what a tool returned into a :class:`ToolResponse`.

    Accepts a response, a string, a block, an agent type, a PIL image, audio as a
    Transformers pipeline dict (``{"audio": ..., "sampling_rate": ...}``), encoded media
    bytes (recognised by their first bytes), a list or tuple of those (one block each), a
    pydantic model or anything JSON can encode (dumped as text). ``media`` (``image``,
    ``audio`` or ``video``: the tool's declared output) makes bytes, arrays and tensors
    that medium, audio at ``samplerate`` unless a ``(samplerate, array)`` pair says
    otherwise; other arrays return as JSON lists (or a summary when large).
    """
    if isinstance(value, ToolResponse):
        return value
    if value is None:
        return ToolResponse(content=[])
    content = _blocks(value, media, samplerate)
    plain = all(isinstance(b, TextBlock) for b in content) and not isinstance(value, AgentType)
    return ToolResponse(content=content, value=value if plain else None)


def _blocks(value: Any, media: str | None, samplerate: int) -> list[OutputBlock]:
    if isinstance(value, _BLOCKS):
        return [value]
    if isinstance(value, AgentType):
        return [value.to_block()]
    if isinstance(value, str):
        return [TextBlock(text=value)]
    block = media_block(value, media, samplerate)
    if block is not None:
        return [block]
    if isinstance(value, (list, tuple)) and value and any(
            isinstance(v, (*_BLOCKS, AgentType)) or media_block(v) is not None for v in value):
        return [b for v in value for b in _blocks(v, None, samplerate)]
    if isinstance(value, BaseModel):
        return [TextBlock(text=value.model_dump_json())]
    if is_array(value):
        return [TextBlock(text=_array_text(value))]
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = str(value)
    return [TextBlock(text=text)]


def _array_text(value: Any) -> str:
    array = as_numpy(value)
    if array.size <= _ARRAY_AS_JSON:
        return json.dumps(array.tolist())
    return f"array of shape {list(array.shape)} and dtype {array.dtype}: {array!r}"
