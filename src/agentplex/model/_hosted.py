"""The shared machinery of hosted-provider models: :class:`HostedChatModel`.

A provider module subclasses it and writes only what is provider-specific: building the
request payload (``_build``: the formatted history, tools, and the generation arguments in
the provider's own names), one non-streamed call (``_complete``), one streamed call
(``_stream``), and the mapping of its SDK's exceptions (``_map_error``). Tool-choice checks,
generation-argument checks, multi-agent labels, role conversions, structured output
(and its fallback), retries and error typing are done here, the same way for every
provider.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import os
import re
import time
from abc import abstractmethod
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias

from pydantic import BaseModel

from ..errors import AgentplexError
from ..message import Msg, ToolUseBlock
from ._base import ChatModelBase, ChatResult, Messages, ToolChoice, chunks_of
from ._errors import (
    AuthenticationError,
    InvalidRequestError,
    MissingCredentialsError,
    ModelError,
    ModelTimeoutError,
    ProviderError,
    RateLimitError,
    UnsupportedOptionError,
)
from ._formatting import NormalizedChoice, convert_roles, label_speakers, normalize_tool_choice
from ._options import NAMES, GenerationOptions, normalize_options, split_options
from ._response import ChatResponse, ChatUsage
from ._retry import RetryPolicy
from ._stream import ResponseBuilder, parse_tool_arguments
from ._structured import StructuredMode, StructuredRequest, run_structured
from ._tokens import estimate_tokens

__all__ = ["HostedChatModel", "Request", "StructuredOutput", "retry_after_seconds"]

StructuredOutput: TypeAlias = Literal["auto", "native", "tool", "json_object"]
"""How ``structured_model`` is asked for: the provider's JSON-schema mode (``native``), a
forced tool call (``tool``), JSON mode with the schema in the prompt (``json_object``), or
``auto``: native where the provider has it, falling back to the tool (once, then for good
for that model instance) when the server rejects the schema mode."""

_ARGUMENT_ERROR = re.compile(r"unexpected keyword argument|positional argument|"
                             r"keyword-only argument|multiple values for (keyword )?argument")


def _is_argument_error(exc: Exception) -> bool:
    """Whether ``exc`` is the caller's wrong argument (say, in ``generate_kwargs``), raised
    as it is; any other ``TypeError`` comes from an answer of the wrong shape (a provider
    answering ``{}`` or ``null``), which is the provider's error."""
    return isinstance(exc, TypeError) and _ARGUMENT_ERROR.search(str(exc)) is not None


_SCHEMA_REJECTED = frozenset({400, 404, 415, 422, 500, 501})
"""HTTP statuses with which servers without a JSON-schema mode refuse one."""


@dataclass
class Request:
    """One provider call, already normalised by :class:`HostedChatModel`."""

    messages: list[Msg | dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: NormalizedChoice = None
    schema: type[BaseModel] | None = None
    """Set when the provider's native structured-output mode is to be used."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Provider arguments passed on as they are (``generate_kwargs``, extra keywords)."""
    options: GenerationOptions = field(default_factory=GenerationOptions)
    """The generation arguments, in our vocabulary; the provider maps them."""
    json_mode: bool = False
    """Ask for any JSON object, the schema being in the prompt (``json_object`` mode)."""
    payload: Any = None
    """What ``_build`` made of the request: the provider's request arguments."""
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        """Seconds since the request was built."""
        return time.monotonic() - self.started


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Read ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date) from headers."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lower:
        try:
            return float(lower["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(parsed.timestamp() - time.time(), 0.0) if parsed else None


_CONNECTION_ERRORS = {
    "TransportError",  # httpx
    "RemoteProtocolError",
    "ClientConnectionError",  # aiohttp
    "ClientPayloadError",
    "ServerDisconnectedError",
    "IncompleteRead",
}


class HostedChatModel(ChatModelBase):
    """Base class of the hosted-provider models (see the module docstring).

    Args:
        model_name: the provider's model name.
        stream: return an async generator of chunks instead of one response.
        max_retries: retries on 429, 5xx, timeouts and dropped connections (the SDK's own
            retries are switched off so that every provider retries the same way).
        timeout: seconds to wait for an answer before :class:`ModelTimeoutError`.
        generate_kwargs: extra provider arguments sent on every call.
        custom_role_conversions: e.g. ``{"system": "user"}`` for models without a
            system role.
        retry_policy: a full :class:`RetryPolicy`, instead of ``max_retries``.
        structured_output: how ``structured_model`` is asked for (:data:`StructuredOutput`).
        **request_kwargs: generation arguments in our vocabulary (``temperature``,
            ``top_p``, ``top_k``, ``max_tokens``, ``stop``, ``seed``, ``presence_penalty``,
            ``frequency_penalty``, and their aliases such as ``stop_sequences``), mapped to
            the provider's own names; any other keyword is sent with every request as it
            is. The same keywords are accepted per call and win over these.
    """

    provider = "hosted"
    native_structured: bool = False
    """Whether the provider has a JSON-schema output mode (else a forced tool is used)."""
    json_object_mode: bool = False
    """Whether the provider has a plain JSON mode (``structured_output="json_object"``)."""
    unsupported_tool_choices: frozenset[str] = frozenset()
    """``auto``/``none``/``required``/``tool`` modes the provider cannot honour."""
    supported_options: ClassVar[frozenset[str]] = NAMES
    """The generation arguments (:class:`GenerationOptions` names) the wire can carry."""
    supports_logprobs: bool = False
    """Whether the provider's wire returns token log-probabilities (``logprobs=True``)."""

    def __init__(
        self,
        model_name: str,
        stream: bool = False,
        *,
        max_retries: int = 2,
        timeout: float | None = 60.0,
        generate_kwargs: dict[str, Any] | None = None,
        custom_role_conversions: dict[str, str] | None = None,
        retry_policy: RetryPolicy | None = None,
        structured_output: StructuredOutput = "auto",
        **request_kwargs: Any,
    ) -> None:
        super().__init__(model_name, stream)
        self.timeout = timeout
        self.generate_kwargs = normalize_options({**(generate_kwargs or {}), **request_kwargs})
        self.custom_role_conversions = dict(custom_role_conversions or {})
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        self.structured_output = self._check_structured(structured_output)
        self._native_structured_state: bool | None = None
        """``auto`` mode: None until the schema mode worked (True) or was rejected (False)."""
        self._options(self.generate_kwargs)  # bad or unsupported arguments fail here

    # -- construction helpers for provider modules ---------------------------------------

    def _credential(self, given: str | None, *env: str, required: bool = True) -> str | None:
        """``given``, else the first of the ``env`` variables set; with ``required``, none
        of them is a :class:`MissingCredentialsError` now rather than a 401 later."""
        key = given or next((os.environ[e] for e in env if os.environ.get(e)), None)
        if key is None and required:
            names = " or ".join(env) or "api_key"
            raise MissingCredentialsError(
                f"no API key: pass api_key=... or set {names}",
                provider=self.provider, model=self.model_name)
        return key

    def _client_args(self, client_args: Mapping[str, Any] | None, **defaults: Any
                     ) -> dict[str, Any]:
        """``defaults`` (timeout, SDK retries off ...) overridden by the user's
        ``client_args``. A ``timeout`` there becomes this model's timeout, and a
        ``max_retries`` this model's retry count (our retries replace the SDK's, so that
        every provider retries the same way)."""
        given = dict(client_args or {})
        if isinstance(given.get("timeout"), (int, float)):
            self.timeout = float(given["timeout"])
            if "timeout" in defaults:
                defaults["timeout"] = self.timeout
                given.pop("timeout")
        if "max_retries" in given:
            self.retry_policy = dataclasses.replace(self.retry_policy,
                                                    max_retries=int(given.pop("max_retries")))
        return {**defaults, **given}

    # -- provider hooks ----------------------------------------------------------------

    @abstractmethod
    def _build(self, request: Request) -> Any:
        """The provider's request arguments (stored in ``request.payload``): the history
        formatted, tools, schema, and ``request.options`` under the provider's names."""

    @abstractmethod
    async def _complete(self, request: Request) -> ChatResponse:
        """One non-streamed call."""

    @abstractmethod
    def _stream(self, request: Request) -> AsyncGenerator[ChatResponse, None]:
        """One streamed call (an async generator built with :class:`ResponseBuilder`)."""

    @abstractmethod
    def _map_error(self, exc: Exception) -> ModelError:
        """Turn an SDK exception into a typed model error."""

    async def aclose(self) -> None:
        """Close the SDK client and its connections (idempotent)."""
        client = getattr(self, "client", None)
        close = getattr(client, "close", None) or getattr(client, "aclose", None)
        if close is not None:
            result = close()
            if hasattr(result, "__await__"):
                await result

    async def __aenter__(self) -> HostedChatModel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- token counting ----------------------------------------------------------------

    async def count_tokens(self, messages: Sequence[Msg | dict[str, Any]],
                           tools: Sequence[dict[str, Any]] | None = None) -> int:
        """The prompt tokens of ``messages`` and ``tools``: the provider's count endpoint
        where it has one (``_count``), else an estimate."""
        history = label_speakers(convert_roles(list(messages), self._msg_role_conversions(),
                                               self.provider, self.model_name))
        request = Request(history, list(tools) if tools else None)
        try:
            counted = await self._count(request)
        except ModelError:
            raise
        except Exception as exc:
            raise self._map_error(exc) from exc
        return counted if counted is not None else estimate_tokens(history, tools)

    async def _count(self, request: Request) -> int | None:
        """The provider's own count of ``request`` (``None``: it has no count endpoint)."""
        return None

    # -- the call ----------------------------------------------------------------------

    async def _call(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None,
        tool_choice: ToolChoice | None,
        structured_model: type[BaseModel] | None,
        **kwargs: Any,
    ) -> ChatResult:
        stream = bool(kwargs.pop("stream", self.stream))
        mode = self._check_structured(kwargs.pop("structured_output", self.structured_output))
        choice = normalize_tool_choice(tool_choice, tools, self.provider, self.model_name)
        self._check_choice(choice)
        if isinstance(messages, (str, Msg)):
            raise InvalidRequestError(
                f"messages must be a list of Msg objects or role/content dicts, not "
                f"{type(messages).__name__}", provider=self.provider, model=self.model_name)
        history = label_speakers(
            convert_roles(list(messages), self._msg_role_conversions(), self.provider,
                          self.model_name)
        )
        options, call_kwargs = self._options({**self.generate_kwargs,
                                              **normalize_options(kwargs)})
        if not self.supports_logprobs and (call_kwargs.get("logprobs")
                                           or call_kwargs.get("top_logprobs")):
            raise UnsupportedOptionError(f"{self.provider} does not return log-probabilities",
                                         provider=self.provider, model=self.model_name,
                                         options=("logprobs",))
        if structured_model is not None:
            response = await self._structured(history, structured_model, mode, options,
                                              call_kwargs)
            return chunks_of(response) if stream else response
        request = self._prepared(Request(history, tools or None, choice if tools else None,
                                         None, call_kwargs, options))
        if stream:
            return await self.retry_policy.stream(lambda: self._open(request))
        return await self.retry_policy.call(lambda: self._checked(request))

    def _options(self, kwargs: dict[str, Any]) -> tuple[GenerationOptions, dict[str, Any]]:
        options, rest = split_options(kwargs, provider=self.provider, model=self.model_name)
        refused = sorted(set(options.given()) - self.supported_options)
        if refused:
            raise UnsupportedOptionError(
                f"{self.provider} cannot honour {', '.join(refused)} (its API has no such "
                "parameter)", provider=self.provider, model=self.model_name,
                options=tuple(refused))
        return options, rest

    def _prepared(self, request: Request) -> Request:
        """``request`` with its payload built; a failure to build it (a bad history, an
        unreadable media source) is an :class:`InvalidRequestError`, and nothing is sent."""
        try:
            request.payload = self._build(request)
        except ModelError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidRequestError(
                f"cannot build the request: {type(exc).__name__}: {exc}",
                provider=self.provider, model=self.model_name) from exc
        return request

    def _check_structured(self, mode: Any) -> StructuredOutput:
        if mode not in ("auto", "native", "tool", "json_object"):
            raise InvalidRequestError(
                f"structured_output must be 'auto', 'native', 'tool' or 'json_object', "
                f"not {mode!r}", provider=self.provider, model=self.model_name)
        if (mode == "native" and not self.native_structured) or (
                mode == "json_object" and not self.json_object_mode):
            raise UnsupportedOptionError(
                f"{self.provider} has no {mode} structured-output mode",
                provider=self.provider, model=self.model_name, options=("structured_output",))
        if mode == "tool":
            self._check_choice(("tool", "structured"))
        result: StructuredOutput = mode
        return result

    async def _structured(
        self, history: list[Any], schema: type[BaseModel], mode: StructuredOutput,
        options: GenerationOptions, kwargs: dict[str, Any],
    ) -> ChatResponse:
        """Structured output in ``mode``; on ``auto``, a server that rejects the schema
        mode gets the forced tool instead, and so does every later call of this model."""
        resolved: StructuredMode
        if mode == "auto":
            native = self.native_structured and self._native_structured_state is not False
            resolved = "native" if native else "tool"
        else:
            resolved = mode
        if resolved == "tool":
            self._check_choice(("tool", "structured"))
        probing = mode == "auto" and resolved == "native" and not self._native_structured_state

        async def attempt(h: list[Any], s: StructuredRequest) -> ChatResponse:
            return await self._attempt(h, s, options, kwargs, probing=probing)

        try:
            return await run_structured(attempt, history, schema, mode=resolved,
                                        provider=self.provider, model=self.model_name,
                                        how=self._structured_how(resolved))
        except _SchemaModeRejected:
            self._native_structured_state = False
            return await self._structured(history, schema, "tool", options, kwargs)

    def _structured_how(self, mode: StructuredMode) -> str:
        """What this provider's wire does with the schema in ``mode`` (said in the error
        raised when the output does not match it)."""
        if mode == "native":
            return f"the schema sent as {self.provider}'s JSON-schema response format"
        if mode == "tool":
            return "a forced tool call whose parameters are the schema"
        return ("JSON mode with the schema in the prompt: the server does not enforce it; "
                "structured_output='native' or 'tool' ask it to")

    def _msg_role_conversions(self) -> dict[str, str]:
        """Role conversions applied to ``Msg`` items (providers may handle more roles)."""
        return self.custom_role_conversions

    def _check_choice(self, choice: NormalizedChoice) -> None:
        mode = choice[0] if isinstance(choice, tuple) else choice
        if mode is not None and mode in self.unsupported_tool_choices:
            shown = "a tool's name" if mode == "tool" else repr(mode)
            raise UnsupportedOptionError(
                f"{self.provider} cannot honour tool_choice={shown}", provider=self.provider,
                model=self.model_name,
            )

    async def _attempt(
        self, history: list[Any], structured: StructuredRequest, options: GenerationOptions,
        kwargs: dict[str, Any], *, probing: bool = False,
    ) -> ChatResponse:
        choice: NormalizedChoice = (
            ("tool", structured.tool_choice) if structured.tool_choice else None
        )
        request = self._prepared(Request(
            history, structured.tools, choice,
            structured.schema if structured.mode == "native" else None, kwargs, options,
            json_mode=structured.mode == "json_object"))
        if probing:  # one try: a server without the schema mode answers 400/422/500 to it
            try:
                response = await self._call_once(request)
            except ProviderError as exc:
                if exc.status_code in _SCHEMA_REJECTED:
                    raise _SchemaModeRejected from exc
                response = await self.retry_policy.call(lambda: self._call_once(request))
            self._native_structured_state = True
            return response
        return await self.retry_policy.call(lambda: self._call_once(request))

    async def _call_once(self, request: Request) -> ChatResponse:
        request.started = time.monotonic()
        try:
            return await self._complete(request)
        except ModelError:
            raise
        except Exception as exc:
            if _is_argument_error(exc):
                raise
            raise self._map_error(exc) from exc

    async def _checked(self, request: Request) -> ChatResponse:
        response = await self._call_once(request)
        for block in response.content:
            if isinstance(block, ToolUseBlock) and block.raw_input:
                self._parse_arguments(block.raw_input)
        return response

    async def _open(self, request: Request) -> AsyncGenerator[ChatResponse, None]:
        request.started = time.monotonic()
        return self._mapped(self._stream(request))

    async def _mapped(
        self, gen: AsyncGenerator[ChatResponse, None]
    ) -> AsyncGenerator[ChatResponse, None]:
        try:
            async for chunk in gen:
                yield chunk
        except ModelError:
            raise
        except Exception as exc:
            if _is_argument_error(exc):
                raise
            raise self._map_error(exc) from exc
        finally:
            await gen.aclose()

    # -- helpers for provider modules ---------------------------------------------------

    def _parse_arguments(self, raw: str) -> dict[str, Any]:
        try:
            return parse_tool_arguments(raw)
        except ValueError as exc:
            raise ProviderError(
                f"the model sent tool arguments that are not a JSON object: {raw[:200]!r}",
                provider=self.provider, model=self.model_name,
            ) from exc

    def _tool_use(self, id: str, name: str, arguments: str | dict[str, Any] | None) -> ToolUseBlock:
        """A tool_use block; unparsable argument text is kept in ``raw_input``."""
        if isinstance(arguments, dict):
            return ToolUseBlock(id=id, name=name, input=arguments,
                                raw_input=json.dumps(arguments, ensure_ascii=False))
        try:
            parsed = parse_tool_arguments(arguments)
        except ValueError:
            parsed = {}
        return ToolUseBlock(id=id, name=name, input=parsed, raw_input=arguments or "")

    def _last_chunk(
        self,
        builder: ResponseBuilder,
        request: Request,
        *,
        finish_reason: str | None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        usage_metadata: dict[str, Any] | None = None,
        details: Mapping[str, int] | None = None,
    ) -> ChatResponse:
        """The final chunk; a stream that never said it finished is an error.
        ``details``: ``cached_input_tokens`` and the other :class:`ChatUsage` counts."""
        if finish_reason is None:
            raise ProviderError(
                "the stream ended before the provider finished the response",
                provider=self.provider, model=self.model_name, retryable=True,
            )
        usage = ChatUsage(input_tokens=input_tokens, output_tokens=output_tokens,
                          time=request.elapsed(), metadata=usage_metadata, **(details or {}))
        try:
            return builder.chunk(is_last=True, usage=usage, finish_reason=finish_reason)
        except ValueError as exc:
            raise ProviderError(
                f"the model streamed tool arguments that are not a JSON object: {exc}",
                provider=self.provider, model=self.model_name,
            ) from exc

    def _http_error(
        self, status: int | None, message: str, headers: Mapping[str, str] | None = None
    ) -> ProviderError:
        """A typed error for an HTTP status (``None``: no answer, e.g. a dropped connection)."""
        kw: dict[str, Any] = {"provider": self.provider, "model": self.model_name}
        if status == 429:
            return RateLimitError(message, retry_after=retry_after_seconds(headers), **kw)
        if status in (401, 403):
            return AuthenticationError(message, status_code=status, **kw)
        retryable = status is None or status >= 500 or status in (408, 409)
        return ProviderError(message, status_code=status, retryable=retryable, **kw)

    def _generic_error(self, exc: BaseException) -> ModelError:
        """Classify an exception no SDK wrapped: timeouts, dropped connections, bad data."""
        names = {cls.__name__ for cls in type(exc).__mro__}
        if isinstance(exc, TimeoutError) or any("Timeout" in n for n in names):
            return self._timeout_error(exc)
        if names & _CONNECTION_ERRORS or isinstance(exc, ConnectionError):
            return self._http_error(None, f"connection dropped ({type(exc).__name__}: {exc})")
        return ProviderError(f"unreadable response ({type(exc).__name__}: {exc})",
                             provider=self.provider, model=self.model_name)

    def _map_sdk_error(self, sdk: Any, exc: Exception) -> ModelError:
        """Map errors of the OpenAI and Anthropic SDKs, which share one generated error
        hierarchy (``APITimeoutError``, ``APIStatusError``, ``APIConnectionError``)."""
        if isinstance(exc, sdk.APITimeoutError):
            return self._timeout_error(exc)
        if isinstance(exc, sdk.APIStatusError):
            return self._http_error(exc.status_code, f"HTTP {exc.status_code}: {exc.message}",
                                    exc.response.headers)
        if isinstance(exc, sdk.APIConnectionError):
            return self._http_error(None, f"connection failed: {exc}")
        return self._generic_error(exc)

    def _timeout_error(self, exc: BaseException) -> ModelTimeoutError:
        return ModelTimeoutError(
            f"no answer within {self.timeout} s ({type(exc).__name__})",
            provider=self.provider, model=self.model_name,
        )

    def _usage(self, request: Request, input_tokens: int | None, output_tokens: int | None,
               metadata: dict[str, Any] | None = None,
               details: Mapping[str, int] | None = None) -> ChatUsage:
        return ChatUsage(input_tokens=input_tokens or 0, output_tokens=output_tokens or 0,
                         time=request.elapsed(), metadata=metadata, **(details or {}))


class _SchemaModeRejected(AgentplexError):
    """The server refused the JSON-schema mode while ``auto`` was probing it."""
