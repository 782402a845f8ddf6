"""Hostile clients against a real server on loopback: oversized, over-long and deeply
nested requests, foreign Host names and origins, slowloris, connection floods, clients
that stop reading, and streams whose client is gone."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import pytest

from agentplex.model import ScriptedChatModel
from agentplex.serving import HttpLimits, ModelServer
from agentplex.serving.lowlevel import malloc_trim
from tests.support.hostile_models import Hog

pytestmark = pytest.mark.anyio

HI = [{"role": "user", "content": "hi"}]


def _model() -> ScriptedChatModel:
    return ScriptedChatModel(["ok"], cycle=True)


async def _raw(port: int, data: bytes, *, read_timeout: float = 30) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), read_timeout)
    finally:
        writer.close()


def _status_and_error(reply: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower(), head
    return int(head.split()[1]), json.loads(body)["error"]


async def test_bodies_over_the_limit_are_413_json() -> None:
    async with ModelServer(_model(), served_model_name="m", max_body_size=1000) as srv:
        announced = await _raw(srv.port, b"POST /v1/chat/completions HTTP/1.1\r\n"
                               b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 100000000\r\nConnection: close\r\n\r\n")
        status, error = _status_and_error(announced)
        assert status == 413 and error["code"] == "request_too_large"
        chunk = b"x" * 600
        chunked = await _raw(srv.port, b"POST /v1/chat/completions HTTP/1.1\r\n"
                             b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                             + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 3 + b"0\r\n\r\n")
        status, error = _status_and_error(chunked)
        assert status == 413 and error["type"] == "invalid_request_error"


async def test_message_count_and_nesting_are_bounded_with_400() -> None:
    async with ModelServer(_model(), served_model_name="m", max_messages=100) as srv, \
            httpx.AsyncClient(base_url=srv.base_url, timeout=60) as http:
        for count in (101, 30_000):  # a small body, and one big enough to be counted first
            many = await http.post("/chat/completions",
                                   json={"model": "m", "messages": HI * count})
            assert many.status_code == 400
            assert many.json()["error"]["code"] == "too_many_messages"
        spaced = b'{"model": "m", "messages": [' + b", ".join(
            [b'{"role" : "user", "content": "hi"}'] * 30_000) + b"]}"
        got = await http.post("/chat/completions", content=spaced,
                              headers={"content-type": "application/json"})
        assert got.status_code == 400 and got.json()["error"]["code"] == "too_many_messages"
        nested = "[" * 50_000 + "]" * 50_000
        deep_args = await http.post("/chat/completions", json={"model": "m", "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "c", "type": "function",
                "function": {"name": "f", "arguments": nested}}]}]})
        assert deep_args.status_code == 400, deep_args.text
        assert deep_args.json()["error"]["type"] == "invalid_request_error"
        deep_body = await http.post(
            "/chat/completions", content=b'{"model": "m", "messages": ' + b"[" * 100_000
            + b"]" * 100_000 + b"}", headers={"content-type": "application/json"})
        assert deep_body.status_code == 400 and deep_body.json()["error"]["code"] == "too_deep"
        assert (await http.post("/chat/completions", json={
            "model": "m", "messages": HI * 100})).status_code == 200


async def test_a_flood_of_messages_is_refused_before_its_body_is_all_sent() -> None:
    """The ``"role":`` keys are counted as the body arrives: a body announcing 50 MB of
    messages is refused, and its connection closed, once more than ``max_messages`` have
    come, without waiting for (or buffering) the rest."""
    async with ModelServer(_model(), served_model_name="m", max_messages=1000) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        try:
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
                         b'{"model": "m", "messages": [' + b'{"role": "user", "content": "x"},'
                         * 3000)
            await writer.drain()
            reply = await asyncio.wait_for(reader.read(), 30)  # the server closes it
        finally:
            writer.close()
        status, error = _status_and_error(reply)
        assert status == 400 and error["code"] == "too_many_messages"
        assert b"connection: close" in reply.lower()
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http:
            ok = await http.post("/chat/completions", json={"model": "m", "messages": HI})
            assert ok.status_code == 200


async def test_stalled_bodies_hold_no_running_request() -> None:
    """Clients that send headers and part of a body, then stall, hold a connection and their
    bytes, not a running request (the app starts once the body is in)."""
    async with ModelServer(_model(), served_model_name="m") as srv:
        state = srv._server.server_state
        body = json.dumps({"model": "m", "messages": HI}).encode()
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        stalled = []
        for _ in range(50):
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(head + body[:10])
            stalled.append((reader, writer))
        try:
            await _eventually(lambda: len(state.connections) >= 50)
            await asyncio.sleep(0.2)  # (their first bytes are read)
            assert len(state.tasks) == 0
            reader, writer = stalled[0]
            writer.write(body[10:])
            reply = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            assert reply.startswith(b"HTTP/1.1 200"), reply
        finally:
            for _, writer in stalled:
                writer.close()


async def test_a_body_sent_after_100_continue_is_answered() -> None:
    """A request's app starts once its body is in, except for a client that waits for
    ``100 Continue`` before sending it."""
    async with ModelServer(_model(), served_model_name="m") as srv:
        body = json.dumps({"model": "m", "messages": HI}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        try:
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
            await writer.drain()
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            assert interim.startswith(b"HTTP/1.1 100"), interim
            writer.write(body)
            reply = await asyncio.wait_for(reader.read(), 30)
        finally:
            writer.close()
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]


async def test_memory_is_handed_back_after_big_bodies_and_connection_floods() -> None:
    """After a big body is answered, or many connections close, the server asks the C
    allocator to return its free pages (``malloc_trim``, glibc)."""
    if not malloc_trim():
        pytest.skip("the C allocator has no malloc_trim (not glibc)")
    async with ModelServer(_model(), served_model_name="m") as srv:
        trimmer = srv.app.state.server.trimmer
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=60) as http:
            big = await http.post("/chat/completions", json={"model": "m", "messages": [
                {"role": "user", "content": "x" * (2 << 20)}]})
            assert big.status_code == 200
        await _eventually(lambda: trimmer.trims >= 1)
        before = trimmer.trims
        flood = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(100)]
        await _eventually(lambda: len(srv._server.server_state.connections) >= 100)
        for _, writer in flood:
            writer.close()
        await _eventually(lambda: trimmer.trims > before)


async def _eventually(condition: Any, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.05)


async def test_without_a_key_only_loopback_hosts_and_same_origin_are_served() -> None:
    async with ModelServer(_model(), served_model_name="m") as srv, httpx.AsyncClient(
            base_url=srv.base_url, timeout=10) as http:
        body = json.dumps({"model": "m", "messages": HI})
        rebound = await http.post("/chat/completions", content=body,
                                  headers={"host": "attacker.example:8000"})
        assert rebound.status_code == 403
        assert rebound.json()["error"]["code"] == "host_not_allowed"
        assert (await http.get("/health", headers={"host": "10.1.2.3"})).status_code == 403
        page = await http.post("/chat/completions", content=body, headers={
            "origin": "http://attacker.example", "content-type": "text/plain"})
        assert page.status_code == 403 and page.json()["error"]["code"] == "cross_origin"
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST"):
            ok = await http.post("/chat/completions", content=body, headers={
                "host": host, "origin": "http://localhost:3000"})
            assert ok.status_code == 200, (host, ok.text)
    async with ModelServer(_model(), served_model_name="m", api_key="k") as srv, \
            httpx.AsyncClient(base_url=srv.base_url, timeout=10) as http:
        keyed = await http.post("/chat/completions", json={"model": "m", "messages": HI},
                                headers={"host": "api.example", "authorization": "Bearer k"})
        assert keyed.status_code == 200
    async with ModelServer(_model(), served_model_name="m",
                           allowed_hosts=["box.internal"]) as srv, httpx.AsyncClient(
            base_url=srv.base_url.removesuffix("/v1"), timeout=10) as http:
        assert (await http.get("/health", headers={"host": "box.internal:80"})).status_code == 200
        assert (await http.get("/health", headers={"host": "other"})).status_code == 403


async def test_slow_headers_and_bodies_time_out_with_408() -> None:
    limits = HttpLimits(header_timeout=0.5, body_timeout=0.5)
    async with ModelServer(_model(), served_model_name="m", limits=limits) as srv:
        slow_head = await _raw(srv.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127")
        status, error = _status_and_error(slow_head)
        assert status == 408 and error["code"] == "request_timeout"
        slow_body = await _raw(srv.port, b"POST /v1/chat/completions HTTP/1.1\r\n"
                               b"Host: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
        assert _status_and_error(slow_body)[0] == 408


async def test_connections_over_the_limit_get_503_and_the_server_goes_on() -> None:
    async with ModelServer(_model(), served_model_name="m",
                           limits=HttpLimits(max_connections=5)) as srv:
        idle = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(5)]
        try:
            refused = await _raw(srv.port, b"")
            status, error = _status_and_error(refused)
            assert status == 503 and error["code"] == "too_many_connections"
        finally:
            for _, writer in idle:
                writer.close()
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=10) as http:
            for _ in range(100):  # the closed connections are noticed soon
                try:
                    if (await http.get("/models")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
            assert (await http.get("/models")).status_code == 200


async def _health(srv: ModelServer) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=srv.base_url.removesuffix("/v1"),
                                 timeout=30) as http:
        got: dict[str, Any] = (await http.get("/health")).json()
        return got


async def test_a_client_that_stops_reading_loses_its_slot() -> None:
    model = Hog(10**7, size=4096, suspend=True)
    async with ModelServer(model, served_model_name="m",
                           limits=HttpLimits(write_timeout=0.5)) as srv:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        body = json.dumps({"model": "m", "stream": True, "messages": HI}).encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        try:  # ... and never reads
            await asyncio.wait_for(model.closed.wait(), 60)
            for _ in range(200):
                if (await _health(srv))["running"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert (await _health(srv))["running"] == 0
            assert not model.finished
        finally:
            sock.close()


async def test_a_stream_that_never_suspends_stops_when_its_client_is_gone() -> None:
    model = Hog(2_000_000)
    async with ModelServer(model, served_model_name="m") as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        body = json.dumps({"model": "m", "stream": True, "messages": HI}).encode()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        await asyncio.wait_for(reader.readuntil(b"data: "), 30)
        writer.close()
        # other requests are served while it streams, and it stops once the client is gone
        assert (await _health(srv))["status"] == "ok"
        await asyncio.wait_for(model.closed.wait(), 60)
        assert not model.finished and model.sent < 2_000_000
