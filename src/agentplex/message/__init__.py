"""Messages, their content blocks and the wire codec. Pure data, no I/O."""

from ._blocks import (
    AudioBlock,
    Base64Source,
    Block,
    ContentBlock,
    ImageBlock,
    MediaSource,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
    VideoBlock,
)
from ._codec import decode, encode, register_wire_type
from ._errors import DecodeError, EncodeError
from ._msg import Msg, Role

__all__ = [
    "AudioBlock",
    "Base64Source",
    "Block",
    "ContentBlock",
    "DecodeError",
    "EncodeError",
    "ImageBlock",
    "MediaSource",
    "Msg",
    "Role",
    "TextBlock",
    "ThinkingBlock",
    "ToolResultBlock",
    "ToolUseBlock",
    "URLSource",
    "VideoBlock",
    "decode",
    "encode",
    "register_wire_type",
]
