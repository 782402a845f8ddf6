"""A response leaves the server in one write: the head waits for the body's first part."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytestmark = pytest.mark.anyio

pytest.importorskip("uvicorn")

from agentplex.model import ScriptedChatModel  # noqa: E402
from agentplex.serving import ModelServer  # noqa: E402
from agentplex.serving._server import _HeldHead  # noqa: E402


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_head_goes_out_with_the_body() -> None:
    sink = Recorder()
    held: Any = _HeldHead(sink)
    held.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert sink.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    held.write(b"{}")
    assert sink.writes[1:] == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    held.write(b"HTTP/1.1 404 Not Found\r\n\r\n")
    held.flush()  # a response without a body (HEAD)
    held.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    held.close()
    assert sink.writes[2:] == [b"HTTP/1.1 404 Not Found\r\n\r\n",
                               b"HTTP/1.1 500 Internal Server Error\r\n\r\n"]
    assert sink.closed and held.is_closing()  # the rest is the transport's


async def test_answers_arrive_whole_over_keep_alive() -> None:
    """Including a HEAD request's, whose head has no body to go out with."""
    model = ScriptedChatModel(lambda messages, **_: "hi", model_name="m")
    body = b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}'
    async with ModelServer(model) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            for method, path in (("POST", "/v1/chat/completions"), ("HEAD", "/health"),
                                 ("POST", "/v1/chat/completions")):
                content = (f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                           if method == "POST" else "")
                writer.write(f"{method} {path} HTTP/1.1\r\nHost: [::1]\r\n{content}\r\n".encode()
                             + (body if method == "POST" else b""))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert head.startswith(b"HTTP/1.1 200")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                if method == "POST":
                    answer = await asyncio.wait_for(reader.readexactly(length), 10)
                    assert b'"content":"hi"' in answer
        finally:
            writer.close()
