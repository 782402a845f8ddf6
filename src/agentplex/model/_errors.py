"""Typed errors raised by chat models. Each says which provider and model failed.

The tree::

    AgentplexError
    └── ModelError
        ├── ProviderError              the provider answered with an error (or not at all)
        │   ├── RateLimitError         HTTP 429
        │   └── AuthenticationError    HTTP 401 / 403
        ├── ModelTimeoutError          no answer in time (also a TimeoutError)
        ├── StructuredOutputError      output did not validate against the schema
        ├── InvalidRequestError        the request could not be built (also a ValueError)
        │   └── UnsupportedOptionError the provider cannot honour an option
        ├── MissingCredentialsError    no API key at construction (also a ValueError)
        ├── ModelNotAvailableError     a local model is not on this machine
        │                              (also a FileNotFoundError)
        └── FallbackError              every model of a FallbackModel failed
                                       (also an ExceptionGroup of their errors)
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import AgentplexError

__all__ = [
    "AuthenticationError",
    "FallbackError",
    "InvalidRequestError",
    "MissingCredentialsError",
    "ModelError",
    "ModelNotAvailableError",
    "ModelTimeoutError",
    "ProviderError",
    "RateLimitError",
    "StructuredOutputError",
    "UnsupportedOptionError",
]


class ModelError(AgentplexError):
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
    """The model's output did not validate against ``structured_model``; ``raw`` holds it,
    ``mode`` the structured-output mode it was asked for in (``native``, ``tool``,
    ``json_object``; ``None`` where there is no choice, as for local models)."""

    def __init__(
        self, message: str, *, raw: str, provider: str = "unknown", model: str = "unknown",
        mode: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, model=model)
        self.raw = raw
        self.mode = mode


class InvalidRequestError(ModelError, ValueError):
    """The request could not be built from the caller's input (a malformed history, an
    unreadable media source, a bad generation argument); nothing was sent, and
    :class:`~agentplex.model.FallbackModel` does not try another model for it."""


class UnsupportedOptionError(InvalidRequestError):
    """The provider cannot honour an option (a ``tool_choice`` mode, a block type, a
    generation argument, ...); ``options`` names the options refused."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "unknown",
        model: str = "unknown",
        options: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, provider=provider, model=model)
        self.options = options


class MissingCredentialsError(ModelError, ValueError):
    """No API key was given and none was found in the provider's environment variables;
    raised when the model is built, not at its first call."""


class ModelNotAvailableError(ModelError, FileNotFoundError):
    """The model is not on this machine; the message says how to get it."""

    def __init__(self, message: str, *, model: str = "unknown",
                 provider: str = "transformers") -> None:
        super().__init__(message, provider=provider, model=model)


class FallbackError(ExceptionGroup[Exception], ModelError):
    """Every model of a :class:`~agentplex.model.FallbackModel` failed.

    An exception group of what each model raised, in the order they were tried
    (``exceptions``): ``except* RateLimitError`` picks out the models that were rate limited,
    and ``except ModelError`` catches the whole group.
    """

    def __init__(self, message: str, exceptions: Sequence[Exception], *,
                 provider: str = "unknown", model: str = "unknown") -> None:
        super().__init__(message, exceptions)
        self.provider = provider
        self.model = model

    def __new__(cls, message: str, exceptions: Sequence[Exception], *,
                provider: str = "unknown", model: str = "unknown") -> FallbackError:
        return super().__new__(cls, message, exceptions)

    def __str__(self) -> str:
        return f"[{self.provider}:{self.model}] {super().__str__()}"

    def derive(self, excs: Sequence[Exception]) -> FallbackError:  # type: ignore[override]
        """The same failure with only ``excs`` (what ``split``/``subgroup`` build)."""
        return FallbackError(self.message, excs, provider=self.provider, model=self.model)
