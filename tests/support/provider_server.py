"""A scripted HTTP/1.1 server on loopback that the provider SDKs talk to.

It is a plain asyncio server (no framework) so that tests control every byte: JSON bodies,
server-sent-event streams exactly as a provider frames them, NDJSON streams, abrupt
disconnects in the middle of a chunked body, and answers that never come. Each request
takes the next scripted responder; every request is recorded for inspection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

Responder = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}

_Model = TypeVar("_Model")


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeServer:
    """Answers requests from a queue of responders; see the module docstring."""

    requests: list[Recorded] = field(default_factory=list)
    _queue: deque[Responder] = field(default_factory=deque)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    stall_instead_of_truncating: bool = False
    """Make ``stream(..., truncate=True)`` keep the connection open instead of dropping it."""
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Called before the server stops (tests register their models' ``aclose``)."""
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a client hung up while a responder was still writing or waiting."""
    validate: Callable[[Recorded], Responder | None] | None = None
    """Looks at each request first; a responder it returns (a rejection) answers instead
    of the next scripted one, as a server's request validation would."""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        for close in self.closers:
            await close()
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def track(self, model: _Model) -> _Model:
        """Close ``model`` (its SDK client) when the server stops; returns ``model``."""
        closable: Any = model  # a provider's model: ChatModelBase declares no aclose
        self.closers.append(closable.aclose)
        return model

    # -- scripting ---------------------------------------------------------------------

    def then(self, *responders: Responder) -> FakeServer:
        self._queue.extend(responders)
        return self

    def json(self, body: Any, status: int = 200, headers: dict[str, str] | None = None
             ) -> FakeServer:
        return self.then(json_response(body, status, headers))

    def stream(self, frames: Iterable[str], *, content_type: str = "text/event-stream",
               truncate: bool = False, hang_after: bool = False) -> FakeServer:
        if truncate and self.stall_instead_of_truncating:
            truncate, hang_after = False, True
        return self.then(stream_response(list(frames), content_type, truncate, hang_after,
                                         self.disconnected))

    def raw(self, text: str, status: int = 200, content_type: str = "application/json"
            ) -> FakeServer:
        return self.then(raw_response(text.encode(), status, {"content-type": content_type}))

    def hang(self) -> FakeServer:
        return self.then(self._hang)

    async def _hang(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.read(1), 20)
        self.disconnected.set()

    # -- serving -----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                responder = self.validate(request) if self.validate is not None else None
                if responder is None:
                    responder = self._queue.popleft() if self._queue else _unscripted
                await responder(reader, writer)
                if writer.is_closing():
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            self.disconnected.set()
        except asyncio.CancelledError:
            return  # the server is stopping; asyncio's stream callback dislikes cancelled tasks
        finally:
            self._tasks.discard(task)
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> Recorded | None:
    line = await reader.readline()
    if not line:
        return None
    method, target, _ = line.decode().split(" ", 2)
    headers: dict[str, str] = {}
    while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    parts = urlsplit(target)
    return Recorded(method, parts.path, parse_qs(parts.query), headers, body)


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def raw_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None
                 ) -> Responder:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        all_headers = {"content-type": "application/json", **(headers or {}),
                       "content-length": str(len(body))}
        writer.write(_head(status, all_headers) + body)
        await writer.drain()

    return respond


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Responder:
    return raw_response(json.dumps(body).encode(), status, headers)


def stream_response(frames: list[str], content_type: str = "text/event-stream",
                    truncate: bool = False, hang_after: bool = False,
                    on_disconnect: asyncio.Event | None = None) -> Responder:
    """A chunked streaming body, one HTTP chunk per frame.

    ``truncate`` drops the connection after the frames without ending the chunked body
    (what a dropped connection looks like); ``hang_after`` keeps it open, sending nothing.
    """

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_head(200, {"content-type": content_type,
                                 "transfer-encoding": "chunked", "cache-control": "no-cache"}))
        for frame in frames:
            data = frame.encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
        if truncate:
            writer.close()
            return
        if hang_after:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.read(1), 20)
            if on_disconnect is not None:
                on_disconnect.set()
            writer.close()
            return
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    return respond


async def _unscripted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await json_response({"error": {"message": "the test scripted no response"}}, 500)(
        reader, writer)


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event: ``event:`` line when given, then ``data:`` (JSON unless str)."""
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"
