"""MCP servers as tool sources, against a real server process (stdio and HTTP)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import anyio
import pytest

from agentplex.message import ImageBlock, ToolUseBlock
from agentplex.tool import HttpMCPClient, MCPClient, StdIOMCPClient, Toolkit
from tests.support import ROOT

pytest.importorskip("mcp")
pytestmark = pytest.mark.anyio

SERVER = ["-m", "tests.support.mcp_server"]


async def check_client(client: MCPClient) -> None:
    toolkit = Toolkit()
    toolkit.create_tool_group("mcp", active=True)
    names = await toolkit.register_mcp_client(client, group_name="mcp", disable_funcs=["fail"])
    assert sorted(names) == ["add", "picture"]
    schemas = {s["function"]["name"]: s["function"] for s in toolkit.get_json_schemas()}
    assert "Add two integers" in schemas["add"]["description"]
    assert schemas["add"]["parameters"]["required"] == ["a", "b"]

    result = await toolkit.execute(ToolUseBlock(id="1", name="add", input={"a": 2, "b": 3}))
    assert (result.output, result.is_error) == ("5", False)
    bad = await toolkit.execute(ToolUseBlock(id="2", name="add", input={"a": "two", "b": 3}))
    assert bad.is_error and "a: 'two' is not of type 'integer'" in str(bad.output)
    picture = await toolkit.execute(ToolUseBlock(id="3", name="picture",
                                                 input={"caption": "cat"}))
    assert isinstance(picture.output, list)
    text, image = picture.output
    assert text.type == "text" and text.text == "cat"
    assert isinstance(image, ImageBlock) and image.source.type == "base64"
    assert image.source.media_type == "image/png"

    await toolkit.register_mcp_client(client, enable_funcs=["fail"])
    failed = await toolkit.execute(ToolUseBlock(id="4", name="fail", input={"reason": "x"}))
    assert failed.is_error and "fail" in str(failed.output)  # mcp 2 hides the message


async def test_stdio_server() -> None:
    client = StdIOMCPClient("local", sys.executable, SERVER, cwd=str(ROOT))
    with anyio.fail_after(60):
        async with client:
            assert client.connected
            await check_client(client)
            func = await client.get_callable_function("add")
            assert (await func(a=1, b=1)).text == "2"
    assert not client.connected
    with pytest.raises(RuntimeError, match="not connected"):
        _ = client.session


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def http_server() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, *SERVER, "http", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def _wait_listening(url: str) -> None:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with anyio.fail_after(30):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.1)
                continue
            await stream.aclose()
            return


async def test_streamable_http_server(http_server: str) -> None:
    await _wait_listening(http_server)
    client = HttpMCPClient("remote", http_server)
    with anyio.fail_after(60):
        async with client:
            await check_client(client)


