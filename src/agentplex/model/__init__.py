"""Chat models: the contract, the scripted test double, and one module per provider.

The provider classes live in their own modules (``agentplex.model.openai`` and so on) and
are imported lazily from here, so that a provider's SDK is only imported when it is used.
"""

from typing import TYPE_CHECKING, Any

from ._base import ChatModelBase, ChatResult, Messages, ToolChoice, collect
from ._errors import (
    AuthenticationError,
    ModelError,
    ModelNotAvailableError,
    ModelTimeoutError,
    ProviderError,
    RateLimitError,
    StructuredOutputError,
    UnsupportedOptionError,
)
from ._registry import init_chat_model, register_provider
from ._response import ChatResponse, ChatUsage
from ._retry import RetryPolicy
from ._scripted import Reply, ScriptedChatModel
from ._stream import ResponseBuilder, parse_tool_arguments
from .wrappers import FallbackError, FallbackModel, RateLimitedModel, RateLimiter, RetryingModel

if TYPE_CHECKING:
    from .local import TransformersChatModel


__all__ = [
    "AuthenticationError",
    "ChatModelBase",
    "ChatResponse",
    "ChatResult",
    "ChatUsage",
    "FallbackError",
    "FallbackModel",
    "RateLimitedModel",
    "RateLimiter",
    "RetryPolicy",
    "RetryingModel",
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

_PROVIDER_CLASSES = {
    "OpenAIChatModel": "openai",
    "AzureOpenAIChatModel": "azure",
    "AnthropicChatModel": "anthropic",
    "GeminiChatModel": "gemini",
    "DashScopeChatModel": "dashscope",
    "OllamaChatModel": "ollama",
    "HuggingFaceChatModel": "huggingface",
    "TransformersChatModel": "local",  # the local engine: only when asked for
}
__all__ += [n for n in _PROVIDER_CLASSES if n not in __all__]


def __getattr__(name: str) -> Any:
    """Import a provider class (and its SDK) on first use."""
    module = _PROVIDER_CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
