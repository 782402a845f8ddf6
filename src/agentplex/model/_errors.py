"""Typed errors raised by chat models. Each says which provider and model failed."""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ModelError",
    "ModelNotAvailableError",
    "ModelTimeoutError",
    "ProviderError",
    "RateLimitError",
    "StructuredOutputError",
    "UnsupportedOptionError",
]


class ModelError(Exception):
    """Base of every model error; ``provider`` and ``model`` name where it happened."""

    def __init__(self, message: str, *, provider: str = "unknown", model: str = "unknown") -> None:
        super().__init__(f"[{provider}:{model}] {message}")
        self.provider = provider
        self.model = model


class ProviderError(ModelError):
    """The provider answered with an error (``status_code`` when it came over HTTP)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "unknown",
        model: str = "unknown",
        status_code: int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, provider=provider, model=model)
        self.status_code = status_code
        self.retryable = retryable


class RateLimitError(ProviderError):
    """HTTP 429: too many requests. ``retry_after`` is the server's hint in seconds."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "unknown",
        model: str = "unknown",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, model=model, status_code=429, retryable=True)
        self.retry_after = retry_after


class AuthenticationError(ProviderError):
    """The credentials were refused (HTTP 401 or 403)."""


class ModelTimeoutError(ModelError, TimeoutError):
    """The model did not answer within its timeout."""


class StructuredOutputError(ModelError):
    """The model's output did not validate against ``structured_model``; ``raw`` holds it."""

    def __init__(
        self, message: str, *, raw: str, provider: str = "unknown", model: str = "unknown"
    ) -> None:
        super().__init__(message, provider=provider, model=model)
        self.raw = raw


class UnsupportedOptionError(ModelError, ValueError):
    """The provider cannot honour an option (a ``tool_choice`` mode, a block type, ...)."""


class ModelNotAvailableError(ModelError, FileNotFoundError):
    """The model is not on this machine; the message says how to get it."""

    def __init__(self, message: str, *, model: str = "unknown") -> None:
        super().__init__(message, provider="transformers", model=model)
