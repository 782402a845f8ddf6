"""Chat models: the contract, the scripted test double, and one module per provider."""

from typing import TYPE_CHECKING, Any

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
from ._local import ModelNotAvailableError
from ._registry import init_chat_model, register_provider
from ._response import ChatResponse, ChatUsage
from ._scripted import Reply, ScriptedChatModel
from ._stream import ResponseBuilder, parse_tool_arguments

if TYPE_CHECKING:
    from .transformers import TransformersChatModel

register_provider("transformers", "agentplex.model.transformers:create")


def __getattr__(name: str) -> Any:
    # TransformersChatModel imports torch: load it only when it is asked for.
    if name == "TransformersChatModel":
        from .transformers import TransformersChatModel

        return TransformersChatModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AuthenticationError",
    "ChatModelBase",
    "ChatResponse",
    "ChatResult",
    "ChatUsage",
    "Messages",
    "ModelError",
    "ModelNotAvailableError",
    "ModelTimeoutError",
    "ProviderError",
    "RateLimitError",
    "Reply",
    "ResponseBuilder",
    "ScriptedChatModel",
    "StructuredOutputError",
    "ToolChoice",
    "TransformersChatModel",
    "UnsupportedOptionError",
    "collect",
    "init_chat_model",
    "parse_tool_arguments",
    "register_provider",
]
