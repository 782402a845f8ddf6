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
    block_adapter,
)
from ._codec import (
    DEFAULT_MAX_SIZE,
    FORMAT_VERSION,
    DecodeError,
    EncodeError,
    decode,
    encode,
    register_model,
)
from ._msg import Msg, Role

__all__ = [
    "DEFAULT_MAX_SIZE",
    "FORMAT_VERSION",
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
    "block_adapter",
    "decode",
    "encode",
    "register_model",
]
