"""The OpenAI-compatible HTTP application over chat models (Starlette, any ASGI server).

Routes: ``POST /v1/chat/completions`` (answers or server-sent events), ``GET /v1/models``,
``GET /v1/models/{id}``, ``GET /health`` and ``GET /metrics`` (Prometheus). ``/v1`` routes
need ``Authorization: Bearer <api_key>`` when the app has a key; ``/health`` and
``/metrics`` never do. Without a key, only loopback ``Host`` names are served and
cross-origin requests are refused (403). Every error has OpenAI's shape and status: 400 for
a request that cannot be served as asked (too many messages, nested too deeply), 401 for a
missing or wrong key, 404 for an unknown model or path, 413 for a body over the limit, 429
when the queue is full; 5xx only for failures of the server or its model.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from contextlib import aclosing
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import AgentplexError
from ..model import (
    AuthenticationError,
    ChatModelBase,
    ChatResponse,
    ChatResult,
    ModelError,
    ModelTimeoutError,
    ProviderError,
    RateLimitError,
    UnsupportedOptionError,
    chunks_of,
)
from ._convert import DONE, CallArguments, ChunkWriter, call_arguments, completion, sse
from ._errors import BadChatRequest, QueueFull
from ._guard import TOO_LARGE, RequestGate
from ._memory import MemoryTrimmer
from ._metrics import ServerMetrics
from .schema import ChatCompletionRequest, ErrorDetail, ErrorResponse, ModelCard, ModelList

__all__ = ["OpenAIServer", "create_app"]

log = logging.getLogger("agentplex.serving")

_JSON = "application/json"
_PARSE_INLINE = 256 * 1024  # bodies larger than this are parsed in a worker thread
_ROLE_KEY = re.compile(rb'"role"\s*:')  # (inside a JSON string the quotes are escaped)
_KEY_OVERLAP = 64  # bytes of the body read so far searched again with each new chunk


class _ApiError(AgentplexError):
    def __init__(self, status: int, message: str, type: str, *, param: str | None = None,
                 code: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorResponse(error=ErrorDetail(message=message, type=type, param=param,
                                                    code=code))
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return Response(self.body.model_dump_json(), status_code=self.status,
                        media_type=_JSON, headers=self.headers)


def _validation_error(exc: ValidationError) -> _ApiError:
    first = exc.errors(include_url=False)[0]
    param = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__") or None
    message = first.get("msg", str(exc))
    if first.get("type") == "json_invalid":
        return _ApiError(400, f"the body is not valid JSON: {message}",
                         "invalid_request_error", code="invalid_json")
    return _ApiError(400, f"{param + ': ' if param else ''}{message}", "invalid_request_error",
                     param=param)


def _model_error(exc: BaseException) -> _ApiError:
    """The HTTP error standing for an exception raised by the model call."""
    if isinstance(exc, BadChatRequest):
        return _ApiError(400, str(exc), "invalid_request_error", param=exc.param)
    if isinstance(exc, UnsupportedOptionError):
        return _ApiError(400, str(exc), "invalid_request_error", code="unsupported_option")
    if isinstance(exc, RateLimitError):
        headers = {"retry-after": f"{exc.retry_after:g}"} if exc.retry_after else None
        return _ApiError(429, str(exc), "rate_limit_error", code="upstream_rate_limited",
                         headers=headers)
    if isinstance(exc, ModelTimeoutError):
        return _ApiError(504, str(exc), "server_error", code="model_timeout")
    if isinstance(exc, AuthenticationError):
        return _ApiError(502, str(exc), "server_error", code="upstream_authentication")
    if isinstance(exc, ProviderError):
        if exc.status_code in (400, 422):
            return _ApiError(400, str(exc), "invalid_request_error")
        return _ApiError(502, str(exc), "server_error", code="upstream_error")
    if isinstance(exc, ModelError):
        return _ApiError(500, str(exc), "server_error", code="model_error")
    if isinstance(exc, (TypeError, ValueError)):  # an argument the model does not take
        return _ApiError(400, f"the model refused the request: {exc}", "invalid_request_error")
    log.exception("the model call failed", exc_info=exc)
    return _ApiError(500, f"internal error ({type(exc).__name__})", "server_error")


class _Admission:
    """At most ``limit`` requests at once; up to ``queue`` more wait; beyond that, 429."""

    def __init__(self, limit: int, queue: int, metrics: ServerMetrics) -> None:
        if limit < 1 or queue < 0:
            raise ValueError("max_concurrency must be at least 1 and max_queue at least 0")
        self._slots = asyncio.Semaphore(limit)
        self.queue = queue
        self.waiting = 0
        self.running = 0
        self._metrics = metrics

    async def acquire(self) -> None:
        if self._slots.locked():
            if self.waiting >= self.queue:
                raise QueueFull
            self.waiting += 1
            self._metrics.queue_length.set(self.waiting)
            try:
                await self._slots.acquire()
            finally:
                self.waiting -= 1
                self._metrics.queue_length.set(self.waiting)
        else:
            await self._slots.acquire()
        self.running += 1
        self._metrics.running.set(self.running)

    def release(self) -> None:
        self.running -= 1
        self._metrics.running.set(self.running)
        self._slots.release()


class OpenAIServer:
    """The state behind the app: the served models, the key, admission and metrics.

    Args:
        models: served name → model. A model built with ``stream=True`` streams natively
            (and is collected for non-streamed requests); a non-streaming model answers a
            streamed request as one delta.
        api_key: the key ``/v1`` requests must bear (``None``: no key).
        max_concurrency: requests answered at once (a batching model sees them together).
        max_queue: requests waiting beyond those; more are refused with 429.
        max_messages: messages one request may carry; more are refused with 400.
        max_body_size: bytes of one request body (a larger one is refused with 413).
    """

    def __init__(self, models: Mapping[str, ChatModelBase], *, api_key: str | None = None,
                 max_concurrency: int = 256, max_queue: int = 1024,
                 max_messages: int = 10_000, max_body_size: int = 64 * 2**20) -> None:
        if not models:
            raise ValueError("serve at least one model")
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.max_messages = max_messages
        self.max_body_size = max_body_size
        self._big_parse = asyncio.Semaphore(1)
        self.trimmer = MemoryTrimmer()
        self.models = dict(models)
        self.api_key = api_key
        self.metrics = ServerMetrics()
        self.admission = _Admission(max_concurrency, max_queue, self.metrics)
        self.created = int(time.time())

    # -- routes --------------------------------------------------------------------------

    def _check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 self.api_key.encode()):
            raise _ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                            "invalid_request_error", code="invalid_api_key")

    def _model(self, name: str) -> ChatModelBase:
        model = self.models.get(name)
        if model is None:
            raise _ApiError(404, f"the model {name!r} does not exist (served: "
                            f"{', '.join(sorted(self.models))})", "invalid_request_error",
                            param="model", code="model_not_found")
        return model

    async def list_models(self, request: Request) -> Response:
        try:
            self._check_key(request)
        except _ApiError as exc:
            return exc.response()
        cards = [ModelCard(id=name, created=self.created) for name in self.models]
        return Response(ModelList(data=cards).model_dump_json(), media_type=_JSON)

    async def get_model(self, request: Request) -> Response:
        try:
            self._check_key(request)
            name = request.path_params["model"]
            self._model(name)
        except _ApiError as exc:
            return exc.response()
        return Response(ModelCard(id=name, created=self.created).model_dump_json(),
                        media_type=_JSON)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": list(self.models),
                             "running": self.admission.running,
                             "waiting": self.admission.waiting})

    async def metrics_page(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    async def chat_completions(self, request: Request) -> Response:
        started = time.perf_counter()
        name = "unknown"
        try:
            self._check_key(request)
            try:
                raw = await self._read_body(request)
            except ClientDisconnect:
                if request.scope.get(TOO_LARGE):
                    return self._failed(name, _ApiError(
                        413, f"the request body is over the limit of {self.max_body_size} "
                        "bytes", "invalid_request_error", code="request_too_large",
                        headers={"connection": "close"}))  # the rest of the body is unread
                return Response(status_code=499)  # the client is gone: nobody reads this
            size = len(raw)
            try:
                if size > _PARSE_INLINE:  # parse big bodies off the event loop, one at a time
                    async with self._big_parse:
                        body, arguments = await asyncio.to_thread(self._parse, raw)
                else:
                    body, arguments = self._parse(raw)
            finally:
                del raw
                self.trimmer.body_done(size)
            name = body.model
            model = self._model(name)
        except BadChatRequest as exc:
            return self._failed(name, _model_error(exc))
        except _ApiError as exc:
            return self._failed(name, exc)
        try:
            await self.admission.acquire()
        except QueueFull:
            return self._failed(name, _ApiError(
                429, f"the server's queue is full ({self.admission.queue} requests waiting); "
                "retry later", "rate_limit_error", code="queue_full", headers={"retry-after": "1"}))
        try:
            result = await model(arguments.messages, tools=arguments.tools,
                                 tool_choice=arguments.tool_choice, **arguments.kwargs)
            if body.stream:
                stream = chunks_of(result)
                first = await anext(stream)
                self.metrics.first_token(name, time.perf_counter() - started)
                writer = ChunkWriter(name, include_usage=bool(
                    body.stream_options and body.stream_options.include_usage),
                    logprobs=bool(body.logprobs))
                events = self._events(name, writer, first, stream, started)
                return _EventStream(events, stream, self.admission.release)
            response = await _collect(result)
        except BaseException as exc:
            self.admission.release()
            if not isinstance(exc, Exception):
                raise
            return self._failed(name, _model_error(exc))
        self.admission.release()
        seconds = time.perf_counter() - started
        self.metrics.first_token(name, seconds)
        self._answered(name, 200, response, seconds)
        answer = completion(response, name, logprobs=bool(body.logprobs))
        return Response(answer.model_dump_json(exclude_none=True), media_type=_JSON)

    # -- helpers -------------------------------------------------------------------------

    async def _read_body(self, request: Request) -> bytearray:
        """The request's body, read as it arrives. Its ``"role":`` keys are counted on the
        way (cheap, unlike decoding), so a body carrying more messages than allowed is
        refused as soon as that is known, without reading or keeping the rest of it (the
        answer closes the connection)."""
        body = bytearray()
        roles = 0
        async for chunk in request.stream():
            if not chunk:
                continue
            start = max(0, len(body) - _KEY_OVERLAP)
            body += chunk
            # a key that straddles two chunks is counted once: when it ends in the new one
            roles += sum(1 for m in _ROLE_KEY.finditer(body, start) if m.end() > len(body)
                         - len(chunk))
            if roles > self.max_messages:
                raise _ApiError(400, f"more than {self.max_messages} messages, over this "
                                "server's limit", "invalid_request_error", param="messages",
                                code="too_many_messages", headers={"connection": "close"})
        return body

    def _parse(self, raw: bytes | bytearray) -> tuple[ChatCompletionRequest, CallArguments]:
        """The request and the model call it asks for; bounded in message count and depth
        (Python's recursion limit), each excess a 400."""
        try:
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise _ApiError(400, f"the body is not valid JSON: {exc}",
                                "invalid_request_error", code="invalid_json") from None
            messages = data.get("messages") if isinstance(data, dict) else None
            if isinstance(messages, list) and len(messages) > self.max_messages:
                raise _ApiError(400, f"{len(messages)} messages, over this server's limit of "
                                f"{self.max_messages}", "invalid_request_error",
                                param="messages", code="too_many_messages")
            try:
                body = ChatCompletionRequest.model_validate(data)
            except ValidationError as exc:
                raise _validation_error(exc) from None
            return body, call_arguments(body)
        except RecursionError:
            raise _ApiError(400, "the request is nested too deeply", "invalid_request_error",
                            code="too_deep") from None

    def _failed(self, model: str, error: _ApiError) -> Response:
        self.metrics.answered(model if model in self.models else "unknown", error.status)
        return error.response()

    def _answered(self, model: str, status: int, response: ChatResponse | None,
                  seconds: float) -> None:
        usage = response.usage if response is not None else None
        self.metrics.answered(model, status, usage.input_tokens if usage else 0,
                              usage.output_tokens if usage else 0, seconds)

    async def _events(self, name: str, writer: ChunkWriter, first: ChatResponse,
                      stream: AsyncGenerator[ChatResponse, None], started: float
                      ) -> AsyncIterator[bytes]:
        last: ChatResponse | None = None
        status = 200
        try:
            yield writer.first(first)
            chunk: ChatResponse | None = first
            while chunk is not None:
                if chunk.is_last:
                    last = chunk
                    for closing in writer.last(chunk):
                        yield closing
                    return
                event = writer.chunk(chunk)
                if event is not None:
                    yield event
                # a model that never suspends must not hold the loop: let other requests
                # (and the check for a client that is gone) run between chunks
                await asyncio.sleep(0)
                chunk = await anext(stream, None)
            raise ModelError("the model's stream ended without a final chunk")
        except Exception as exc:  # the status is sent: report in the stream, then end it
            error = _model_error(exc)
            status = error.status
            yield sse(error.body.model_dump_json())
            yield DONE
        finally:
            await stream.aclose()
            self._answered(name, status, last, time.perf_counter() - started)


class _EventStream(StreamingResponse):
    """Server-sent events that give back their admission slot however the response ends
    (finished, failed, or the client gone before the first byte)."""

    def __init__(self, events: AsyncIterator[bytes],
                 stream: AsyncGenerator[ChatResponse, None], release: Callable[[], None]
                 ) -> None:
        super().__init__(events, media_type="text/event-stream",
                         headers={"cache-control": "no-cache"})
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()
            await self._stream.aclose()


async def _collect(result: ChatResult) -> ChatResponse:
    """The final response of ``result``; a stream must end with its final chunk."""
    last: ChatResponse | None = None
    async with aclosing(chunks_of(result)) as chunks:
        async for chunk in chunks:
            last = chunk
    if last is None or not last.is_last:
        raise ModelError("the model's stream ended without a final chunk")
    return last


async def _not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
    message = (f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405)
               else str(exc.detail))
    return _ApiError(exc.status_code, message, kind).response()


def create_app(models: ChatModelBase | Mapping[str, ChatModelBase], *,
               served_model_name: str | None = None, api_key: str | None = None,
               max_concurrency: int = 256, max_queue: int = 1024,
               max_body_size: int = 64 * 2**20, max_messages: int = 10_000,
               allowed_hosts: Iterable[str] | None = None) -> Starlette:
    """The ASGI app serving ``models`` (one model, served as ``served_model_name`` or its
    ``model_name``; or a mapping of names to models). See :class:`OpenAIServer`;
    ``allowed_hosts`` are the ``Host`` names served (``None``: loopback names without a
    key, any with one; ``["*"]``: any)."""
    if isinstance(models, ChatModelBase):
        models = {served_model_name or models.model_name: models}
    server = OpenAIServer(models, api_key=api_key, max_concurrency=max_concurrency,
                          max_queue=max_queue, max_messages=max_messages,
                          max_body_size=max_body_size)
    routes = [
        Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
        Route("/v1/models", server.list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", server.get_model, methods=["GET"]),
        Route("/health", server.health, methods=["GET"]),
        Route("/metrics", server.metrics_page, methods=["GET"]),
    ]
    gate = Middleware(RequestGate, allowed_hosts=allowed_hosts, restricted=api_key is None,
                      max_body_size=max_body_size)
    app = Starlette(routes=routes, exception_handlers={HTTPException: _not_found},
                    middleware=[gate])
    app.state.server = server
    return app
