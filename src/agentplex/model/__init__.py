"""Chat models: the contract, the scripted test double, and one module per provider.

The provider classes live in their own modules (``agentplex.model.openai`` and so on) and
are imported lazily from here, so that a provider's SDK is only imported when it is used.
"""

import typing as _typing

from ._agentscope_formatters import (
    AnthropicChatFormatter,
    AnthropicMultiAgentFormatter,
    DashScopeChatFormatter,
    DashScopeMultiAgentFormatter,
    FormatterBase,
    GeminiChatFormatter,
    GeminiMultiAgentFormatter,
    OllamaChatFormatter,
    OllamaMultiAgentFormatter,
    OpenAIChatFormatter,
    OpenAIMultiAgentFormatter,
)
from ._base import ChatModelBase, ChatResult, Messages, ToolChoice, chunks_of, collect
from ._bound import BoundChatModel, ConfigurableChatModel, StructuredChatModel
from ._errors import (
    AuthenticationError,
    FallbackError,
    InvalidRequestError,
    MissingCredentialsError,
    ModelError,
    ModelNotAvailableError,
    ModelTimeoutError,
    ProviderError,
    RateLimitError,
    StructuredOutputError,
    UnsupportedOptionError,
)
from ._hosted import StructuredOutput
from ._options import GenerationOptions
from ._registry import init_chat_model, register_provider
from ._response import ChatResponse, ChatUsage, TokenLogprob, TopLogprob
from ._retry import RetryPolicy
from ._runnable import ModelInput, RunnableConfig
from ._scripted import ScriptedChatModel, ScriptedFunction, ScriptedOutput
from .wrappers import (
    FallbackModel,
    RateLimitedModel,
    RateLimiter,
    RetryingModel,
    WrapperModel,
)

if _typing.TYPE_CHECKING:
    from .local import TransformersChatModel


__all__ = [
    "AnthropicChatFormatter",
    "AnthropicChatModel",
    "AnthropicMultiAgentFormatter",
    "AuthenticationError",
    "AzureOpenAIChatModel",
    "BoundChatModel",
    "ChatModelBase",
    "ChatResponse",
    "ChatResult",
    "ChatUsage",
    "ConfigurableChatModel",
    "DashScopeChatFormatter",
    "DashScopeChatModel",
    "DashScopeMultiAgentFormatter",
    "FallbackError",
    "FallbackModel",
    "FormatterBase",
    "GeminiChatFormatter",
    "GeminiChatModel",
    "GeminiMultiAgentFormatter",
    "GenerationOptions",
    "HuggingFaceChatModel",
    "InvalidRequestError",
    "LiteLLMChatModel",
    "MLXChatModel",
    "Messages",
    "MissingCredentialsError",
    "ModelError",
    "ModelInput",
    "ModelNotAvailableError",
    "ModelTimeoutError",
    "OllamaChatFormatter",
    "OllamaChatModel",
    "OllamaMultiAgentFormatter",
    "OpenAIChatFormatter",
    "OpenAIChatModel",
    "OpenAIMultiAgentFormatter",
    "ProviderError",
    "RateLimitError",
    "RateLimitedModel",
    "RateLimiter",
    "RetryPolicy",
    "RetryingModel",
    "RunnableConfig",
    "ScriptedChatModel",
    "ScriptedFunction",
    "ScriptedOutput",
    "StructuredChatModel",
    "StructuredOutput",
    "StructuredOutputError",
    "TokenLogprob",
    "ToolChoice",
    "TopLogprob",
    "TransformersChatModel",
    "UnsupportedOptionError",
    "WrapperModel",
    "chunks_of",
    "collect",
    "init_chat_model",
    "register_provider",
]


def __getattr__(name: str) -> _typing.Any:
    """Import a provider class (and its SDK) on first use (the table: ``_registry``)."""
    from ._registry import provider_class

    cls = provider_class(name)
    if cls is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return cls
