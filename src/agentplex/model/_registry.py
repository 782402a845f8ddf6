"""``init_chat_model("provider:model")``: a model from one string."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Literal

from ._base import ChatModelBase

__all__ = ["init_chat_model", "register_provider"]

_factories: dict[str, Callable[..., ChatModelBase] | str] = {}


def register_provider(name: str, factory: Callable[..., ChatModelBase] | str) -> None:
    """Make ``init_chat_model("name:model")`` call ``factory(model_name=..., **kwargs)``.

    ``factory`` may be an ``"module:attribute"`` string, imported on first use, so that a
    provider's SDK is only imported when that provider is used.
    """
    _factories[name] = factory


def _resolve(name: str) -> Callable[..., ChatModelBase]:
    factory = _factories.get(name)
    if factory is None:
        known = ", ".join(sorted(_factories)) or "none"
        raise ValueError(f"unknown model provider {name!r} (known: {known})")
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            raise ImportError(
                f"model provider {name!r} needs an optional dependency: {exc}. "
                "Install it with: pip install 'agentplex[providers]'"
            ) from exc
        assert callable(factory)
        _factories[name] = factory
    return factory


def init_chat_model(
    model: str | None = None,
    *,
    provider: str | None = None,
    configurable_fields: Literal["any"] | Sequence[str] | None = None,
    config_prefix: str = "",
    **kwargs: Any,
) -> ChatModelBase:
    """Build a chat model from ``"provider:model"`` (or ``model`` plus ``provider=``,
    LangChain's ``model_provider=`` too).

    Keyword arguments go to the provider's class: generation arguments (``temperature``,
    ``max_tokens``, ``stop`` ...), ``stream``, ``api_key``, ``base_url``, ...; keys not
    given come from the provider's usual environment variables.

    With ``configurable_fields`` (``"any"`` or field names), or without a ``model``, the
    result is a :class:`~agentplex.model.ConfigurableChatModel`: ``config={"configurable":
    {"model": "anthropic:claude-sonnet-4-5", "temperature": 0}}`` on a call picks the
    model and its settings then (``model`` and ``model_provider`` are configurable by
    default when no model is given).
    """
    provider = provider or kwargs.pop("model_provider", None)
    if configurable_fields is not None or model is None:
        from ._bound import ConfigurableChatModel

        fields = configurable_fields if configurable_fields is not None else (
            "model", "model_provider")
        defaults = {"model": model, "model_provider": provider, **kwargs}
        return ConfigurableChatModel({k: v for k, v in defaults.items() if v is not None},
                                     fields, config_prefix)
    if provider is None:
        provider, sep, model_name = model.partition(":")
        if not sep:
            raise ValueError(
                f"model string {model!r} names no provider; use 'provider:model', "
                f"e.g. 'openai:gpt-4o-mini'"
            )
    else:
        model_name = model
    return _resolve(provider)(model_name=model_name, **kwargs)


def _scripted(model_name: str, **kwargs: Any) -> ChatModelBase:
    from ._scripted import ScriptedChatModel

    script = kwargs.pop("script", None)
    if script is None:
        script = [f"Hello from {model_name}."]
        kwargs.setdefault("cycle", True)
    return ScriptedChatModel(script, model_name=model_name, **kwargs)


register_provider("scripted", _scripted)


for _name, _target in {
    "openai": "agentplex.model.openai:OpenAIChatModel",
    "azure_openai": "agentplex.model.azure:AzureOpenAIChatModel",
    "anthropic": "agentplex.model.anthropic:AnthropicChatModel",
    "gemini": "agentplex.model.gemini:GeminiChatModel",
    "google_genai": "agentplex.model.gemini:GeminiChatModel",
    "dashscope": "agentplex.model.dashscope:DashScopeChatModel",
    "ollama": "agentplex.model.ollama:OllamaChatModel",
    "huggingface": "agentplex.model.huggingface:HuggingFaceChatModel",
    "litellm": "agentplex.model.litellm:LiteLLMChatModel",
    "mlx": "agentplex.model.mlx:create",
    "transformers": "agentplex.model.local:create",
}.items():
    register_provider(_name, _target)
