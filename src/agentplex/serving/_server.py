"""Running the app on uvicorn: :class:`ModelServer` (in a running event loop, for programs
and tests) and :func:`serve` (until a signal, for ``agentplex serve``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator, Mapping
from typing import Any, cast

from ..model import ChatModelBase
from ._app import create_app
from ._guard import HttpLimits, error_body, raw_response
from ._memory import MemoryTrimmer

__all__ = ["ModelServer", "run_server", "serve"]

log = logging.getLogger("agentplex.serving")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only then, and
    # without it every answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _HeldHead:
    """Stands in for a connection's transport: a response's head (its status line and
    headers, which uvicorn writes on their own) is held back and written with the first part
    of the body, so that a response is one write — one packet, one wake-up of the client —
    instead of two. Informational heads (``100 Continue``) go out at once."""

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._held = b""

    def write(self, data: bytes) -> None:
        if data.startswith(b"HTTP/1.") and data[9:10] != b"1":
            self._held += data
            return
        if self._held:
            data, self._held = self._held + data, b""
        self._transport.write(data)

    def flush(self) -> None:
        if self._held:
            data, self._held = self._held, b""
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _protocol(limits: HttpLimits, max_body: int,
              trimmer: MemoryTrimmer | None = None) -> Any:
    """uvicorn's httptools protocol writing each response in one piece, with the bounds of
    ``limits``: a connection limit checked as connections arrive, header and body
    time-outs (408), a write time-out while the client reads nothing, and requests started
    once their body is in (or over 64 KiB, or over ``max_body``: refused). ``trimmer`` is
    told how many connections are open (many that close free memory worth giving back)."""
    try:
        from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        log.warning("httptools is not installed: the server runs without its header, body "
                    "and write time-outs and its connection limit")
        return "auto"
    most = limits.connection_limit()
    timeout_body = error_body("the request did not arrive in time", "invalid_request_error",
                              "request_timeout")
    full_body = error_body("too many connections; retry later", "server_error",
                           "too_many_connections")

    class Guarded(HttpToolsProtocol):
        held: _HeldHead
        raw: Any
        timer: asyncio.TimerHandle | None = None
        write_timer: asyncio.TimerHandle | None = None
        deferred: tuple[Any, Any] | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if trimmer is not None:
                trimmer.connections_now(len(self.connections))
            self.raw = transport
            self.held = _HeldHead(transport)
            self.transport = cast(Any, self.held)
            if len(self.connections) > most:
                transport.write(raw_response(503, "Service Unavailable", full_body))
                transport.close()
                return
            self._arm(limits.header_timeout)

        def _arm(self, seconds: float | None) -> None:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = None if seconds is None else self.loop.call_later(
                seconds, self._too_slow)

        def _too_slow(self) -> None:
            self.timer = None
            if self.cycle is not None and self.cycle.response_started:
                self.raw.abort()  # mid-answer: nothing more can be said
                return
            if not self.raw.is_closing():
                self.raw.write(raw_response(408, "Request Timeout", timeout_body))
                self.raw.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self.timer is None:
                self._arm(limits.header_timeout)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm(limits.body_timeout)

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            # A request whose body is still coming waits for it here, without a task or
            # the app's stack: a slow or stalled body costs its buffered bytes (at most
            # uvicorn's 64 KiB high-water mark, when the app is started to drain it),
            # not a running request. A client that waits for "100 Continue" is started
            # at once (the app's first read sends it).
            if (cycle is self.cycle and cycle.more_body and not cycle.waiting_for_100_continue
                    and not self._announced_too_large()):
                self.deferred = (cycle, app)
                return
            super()._start_asgi_task(cycle, app)

        def _announced_too_large(self) -> bool:  # the app refuses it without reading it
            for name, value in self.headers:
                if name == b"content-length":
                    return not value.isdigit() or int(value) > max_body
            return False

        def _start_deferred(self) -> None:
            if self.deferred is not None:
                cycle, app = self.deferred
                self.deferred = None
                super()._start_asgi_task(cycle, app)

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            if self.deferred is not None and len(self.cycle.body) > HIGH_WATER_LIMIT:
                self._start_deferred()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._arm(None)
            self._start_deferred()

        def on_response_complete(self) -> None:
            self.held.flush()  # a HEAD request's answer has no body to carry its head
            super().on_response_complete()

        def pause_writing(self) -> None:
            super().pause_writing()
            if self.write_timer is None:  # the client stopped reading: give it a while
                self.write_timer = self.loop.call_later(limits.write_timeout, self.raw.abort)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self.write_timer is not None:
                self.write_timer.cancel()
                self.write_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            self._arm(None)
            self.deferred = None  # its client is gone before its body came: nothing to run
            if self.write_timer is not None:
                self.write_timer.cancel()
                self.write_timer = None
            super().connection_lost(exc)
            if trimmer is not None:
                trimmer.connections_now(len(self.connections))

    return Guarded


def _uvicorn_server(app: Any, log_level: str, limits: HttpLimits) -> Any:
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the host program owns its signals

    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5,
                            http=_protocol(limits, app.state.server.max_body_size,
                                           app.state.server.trimmer),
                            timeout_keep_alive=int(max(1, limits.keep_alive)),
                            proxy_headers=False)  # the app never looks at client addresses
    return _Server(config)


class ModelServer:
    """The OpenAI-compatible server for ``models``, running in this event loop.

    ``async with ModelServer(model) as server:`` listens on ``host:port`` (port 0: a free
    port; :attr:`base_url` says which) until the block ends. ``limits`` bound connections
    (:class:`~agentplex.serving.HttpLimits`); other arguments go to
    :func:`~agentplex.serving.create_app`.
    """

    def __init__(self, models: ChatModelBase | Mapping[str, ChatModelBase], *,
                 host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 limits: HttpLimits | None = None, **app_options: Any) -> None:
        self.app = create_app(models, **app_options)
        self.host = host
        self.limits = limits or HttpLimits()
        self._socket = _bind(host, port)
        self.port: int = self._socket.getsockname()[1]
        self._server = _uvicorn_server(self.app, log_level, self.limits)
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        """The URL OpenAI clients take as ``base_url`` (ends in ``/v1``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    async def start(self, timeout: float = 10.0) -> ModelServer:
        self._task = asyncio.ensure_future(self._server.serve(sockets=[self._socket]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the server stopped while starting")
            if loop.time() > deadline:
                raise TimeoutError(f"the server did not start within {timeout} s")
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, 10)
        finally:
            self._task = None
            self._socket.close()

    async def __aenter__(self) -> ModelServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(models: ChatModelBase | Mapping[str, ChatModelBase], *,
                host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
                ready: Any = None, limits: HttpLimits | None = None,
                **app_options: Any) -> None:
    """Serve ``models`` on ``host:port`` until SIGINT / SIGTERM (then finish the requests
    under way and return).

    ``ready(base_url)`` is called once the socket listens.
    """
    app = create_app(models, **app_options)
    sock = _bind(host, port)
    server = _uvicorn_server(app, log_level, limits or HttpLimits())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    shown = f"[{host}]" if ":" in host else host
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.01)
    if ready is not None and server.started:
        ready(f"http://{shown}:{sock.getsockname()[1]}/v1")
    try:
        await task
    finally:
        sock.close()


def run_server(models: ChatModelBase | Mapping[str, ChatModelBase], **options: Any) -> None:
    """Block in :func:`serve` on a fresh event loop (uvloop's when installed)."""
    factory: Any = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(models, **options))
