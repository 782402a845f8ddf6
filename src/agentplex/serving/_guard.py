"""What stands between hostile clients and the app: :class:`RequestGate`, an ASGI
middleware that serves only the allowed ``Host`` names, refuses cross-origin requests and
bodies over the size limit (all as OpenAI-shaped JSON errors), and :class:`HttpLimits`,
the connection-level bounds the server's protocol enforces (header, body, write and idle
time-outs; a connection limit)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["TOO_LARGE", "HttpLimits", "RequestGate", "error_body", "is_loopback_host",
           "raw_response", "too_large"]


@dataclass(frozen=True)
class HttpLimits:
    """Connection-level bounds of the server (seconds, or a count).

    Args:
        header_timeout: a request's line and headers must arrive within this (else 408
            and the connection closes): slowloris clients do not hold connections.
        body_timeout: a request's body must arrive within this once its headers have.
        write_timeout: a client that reads nothing for this long while the server has an
            answer (or stream) waiting for it is disconnected, freeing its slot.
        keep_alive: an idle keep-alive connection is closed after this.
        max_connections: connections open at once; more are answered 503 and closed
            (``None``: 4,096, or fewer when the process may open fewer files).
    """

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    write_timeout: float = 30.0
    keep_alive: float = 5.0
    max_connections: int | None = None

    def __post_init__(self) -> None:
        if min(self.header_timeout, self.body_timeout, self.write_timeout,
               self.keep_alive) <= 0:
            raise ValueError("time-outs must be positive")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")

    def connection_limit(self) -> int:
        if self.max_connections is not None:
            return self.max_connections
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        room = 4096 if soft == resource.RLIM_INFINITY else max(16, soft - 128)
        return min(4096, room)


def error_body(message: str, type: str, code: str | None = None,
               param: str | None = None) -> bytes:
    """An OpenAI-shaped error body."""
    return json.dumps({"error": {"message": message, "type": type, "param": param,
                                 "code": code}}).encode()


def raw_response(status: int, reason: str, body: bytes) -> bytes:
    """A whole HTTP/1.1 response that closes its connection (for the protocol's own
    answers, written before or instead of the app's)."""
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a ``Host`` header or URL authority: name, IP, optional port)
    names this machine's loopback interface."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RequestGate:
    """ASGI middleware in front of the app.

    Args:
        app: the app.
        allowed_hosts: ``Host`` names served (``["*"]``: any); ``None``: loopback names only
            when ``restricted``, else any. A restricted server also refuses requests whose
            ``Origin`` is not a loopback (or allowed) name: a web page cannot drive it.
        restricted: the server has no API key.
        max_body_size: request bodies over this many bytes are refused with 413.
    """

    def __init__(self, app: Any, *, allowed_hosts: Iterable[str] | None, restricted: bool,
                 max_body_size: int) -> None:
        self.app = app
        hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.any_host = (hosts is not None and "*" in hosts) or (hosts is None and not restricted)
        self.hosts = hosts or set()
        self.check_origin = restricted and not self.any_host
        self.max_body_size = max_body_size

    def _host_allowed(self, host: str) -> bool:
        if self.any_host:
            return True
        if not self.hosts:
            return is_loopback_host(host)
        name = host.lower()
        return name in self.hosts or name.rpartition(":")[0] in self.hosts or (
            name.startswith("[") and name[1:name.find("]")] in self.hosts)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.lower(), value)
        host = headers.get(b"host", b"").decode("latin-1")
        if not self._host_allowed(host):
            await _reply(send, 403, error_body(
                f"the Host {host[:100]!r} is not served: without an API key this server "
                "answers only loopback names (localhost, 127.0.0.1, [::1]); set a key or "
                "allowed_hosts", "invalid_request_error", "host_not_allowed"))
            return
        origin = headers.get(b"origin")
        if self.check_origin and origin is not None:
            netloc = urlsplit(origin.decode("latin-1")).netloc
            if not netloc or not self._host_allowed(netloc):
                await _reply(send, 403, error_body(
                    "cross-origin requests are refused by a server without an API key",
                    "invalid_request_error", "cross_origin"))
                return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                await _reply(send, 400, error_body("invalid Content-Length",
                                                   "invalid_request_error"))
                return
            if size > self.max_body_size:
                await _reply(send, 413, too_large(self.max_body_size))
                return
        received = 0

        async def counted_receive() -> Any:
            nonlocal received
            if scope.get(TOO_LARGE):
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_size:  # a chunked body grew over the limit:
                    scope[TOO_LARGE] = True  # the app reads a disconnect and answers 413
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counted_receive, send)


TOO_LARGE = "agentplex.body_too_large"
"""Set in the request's scope when its body went over the limit while it was read."""


def too_large(limit: int) -> bytes:
    return error_body(f"the request body is over the limit of {limit} bytes",
                      "invalid_request_error", "request_too_large")


async def _reply(send: Any, status: int, body: bytes) -> None:
    """A refusal, sent before the request's body is read: the connection closes after it
    (else the server would go on reading, and dropping, whatever body follows)."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
