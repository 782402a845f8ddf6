"""Chat models: the contract, the scripted test double, and one module per provider."""

from ._base import ChatModelBase, ChatResult, Messages, ToolChoice, collect
from ._errors import (
    AuthenticationError,
    ModelError,
    ModelTimeoutError,
    ProviderError,
    RateLimitError,
    StructuredOutputError,
    UnsupportedOptionError,
)
from ._registry import init_chat_model, register_provider
from ._response import ChatResponse, ChatUsage
from ._scripted import Reply, ScriptedChatModel
from ._stream import ResponseBuilder, parse_tool_arguments

__all__ = [
    "AuthenticationError",
    "ChatModelBase",
    "ChatResponse",
    "ChatResult",
    "ChatUsage",
    "Messages",
    "ModelError",
    "ModelTimeoutError",
    "ProviderError",
    "RateLimitError",
    "Reply",
    "ResponseBuilder",
    "ScriptedChatModel",
    "StructuredOutputError",
    "ToolChoice",
    "UnsupportedOptionError",
    "collect",
    "init_chat_model",
    "parse_tool_arguments",
    "register_provider",
]
