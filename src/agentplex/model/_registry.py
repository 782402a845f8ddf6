"""``init_chat_model("provider:model")``: a model from one string, and the table of the
built-in providers (which :mod:`agentplex.model` also imports its provider classes from)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

from ._base import ChatModelBase

__all__ = ["PROVIDERS", "Provider", "init_chat_model", "provider_class", "register_provider"]


class Provider(NamedTuple):
    """A built-in provider."""

    cls: str
    """Its class, imported on first use as ``agentplex.model.<cls>``."""
    module: str
    """The module of :mod:`agentplex.model` that holds it (and its SDK's import)."""
    prefixes: tuple[str, ...]
    """Its names in ``init_chat_model("<prefix>:<model>")``."""
    factory: str | None = None
    """What ``init_chat_model`` calls in ``module`` (default: the class)."""


PROVIDERS = (
    Provider("OpenAIChatModel", "openai", ("openai",)),
    Provider("AzureOpenAIChatModel", "azure", ("azure_openai",)),
    Provider("AnthropicChatModel", "anthropic", ("anthropic",)),
    Provider("GeminiChatModel", "gemini", ("gemini", "google_genai")),
    Provider("DashScopeChatModel", "dashscope", ("dashscope",)),
    Provider("OllamaChatModel", "ollama", ("ollama",)),
    Provider("HuggingFaceChatModel", "huggingface", ("huggingface",)),
    Provider("LiteLLMChatModel", "litellm", ("litellm",)),
    Provider("MLXChatModel", "mlx", ("mlx",), "create"),
    Provider("TransformersChatModel", "transformers", ("transformers",), "create"),
)
"""The built-in providers: one row each (``scripted:`` is registered apart)."""

_factories: dict[str, Callable[..., ChatModelBase] | str] = {}


def register_provider(name: str, factory: Callable[..., ChatModelBase] | str) -> None:
    """Make ``init_chat_model("name:model")`` call ``factory(model_name=..., **kwargs)``.

    ``factory`` may be an ``"module:attribute"`` string, imported on first use, so that a
    provider's SDK is only imported when that provider is used.
    """
    _factories[name] = factory


def provider_class(name: str) -> type[ChatModelBase] | None:
    """The built-in provider class called ``name`` (importing its module), or ``None``."""
    for provider in PROVIDERS:
        if provider.cls == name:
            cls: type[ChatModelBase] = getattr(
                importlib.import_module(f"{__package__}.{provider.module}"), name)
            return cls
    return None


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

for _provider in PROVIDERS:
    for _prefix in _provider.prefixes:
        register_provider(_prefix, f"{__package__}.{_provider.module}:"
                                   f"{_provider.factory or _provider.cls}")
