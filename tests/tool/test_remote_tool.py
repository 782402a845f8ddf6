"""RemoteTool against a real HTTP server on loopback."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import numpy as np
import pytest

from agentplex.message import ToolUseBlock
from agentplex.tool import AgentImage, RemoteTool, RemoteToolError, Tool, Toolkit

pytestmark = pytest.mark.anyio

PNG = AgentImage(np.full((2, 3, 3), 9, dtype=np.uint8)).data


class Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"path": self.path, "body": body,
                          "auth": self.headers.get("Authorization")})
        if self.path == "/caption":
            self._answer(200, "application/json", json.dumps(
                [{"generated_text": f"{len(base64.b64decode(body['inputs']))} bytes"}]))
        elif self.path == "/draw":
            self._answer(200, "image/png", PNG)
        elif self.path == "/translate":
            self._answer(200, "application/json", json.dumps(
                {"translation": f"{body['inputs']['text']}@{body['inputs']['lang']}"}))
        else:
            self._answer(503, "text/plain", b"model is loading")

    def _answer(self, status: int, kind: str, body: str | bytes) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.seen.clear()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    thread.join(10)


class Translator(Tool):
    name = "translator"
    description = "Translate a text."
    inputs: ClassVar[list[str]] = ["text", "text"]

    def forward(self, text: str, lang: str) -> str:
        raise NotImplementedError("runs remotely")


class Captioner(RemoteTool):
    """Transformers' customisation points: prepare_inputs and extract_outputs."""

    name = "caption"
    description = "Caption an image."
    inputs: ClassVar[dict[str, dict[str, Any]]] = {"image": {"type": "image"}}

    def extract_outputs(self, outputs: Any) -> Any:
        return outputs[0]["generated_text"]


async def test_remote_tool_posts_inputs_and_reads_json(server: str) -> None:
    tool = RemoteTool(f"{server}/translate", token="t0k", tool_class=Translator)
    assert tool.name == "translator"
    toolkit = Toolkit()
    toolkit.register_tool_function(tool)
    assert toolkit.get_json_schemas()[0]["function"]["parameters"]["required"] == [
        "text", "lang"]
    out = await toolkit.execute(ToolUseBlock(id="1", name="translator",
                                             input={"text": "hi", "lang": "fr"}))
    assert out.output == '{"translation": "hi@fr"}'
    assert await tool("yo", "de") == {"translation": "yo@de"}  # positional, named by the class
    assert Handler.seen[0]["auth"] == "Bearer t0k"
    await tool.aclose()


async def test_media_goes_out_as_base64_and_comes_back_as_blocks(server: str) -> None:
    captioner = Captioner(f"{server}/caption")
    assert await captioner(image=AgentImage(PNG)) == f"{len(PNG)} bytes"
    assert base64.b64decode(Handler.seen[0]["body"]["inputs"]) == PNG
    drawer = RemoteTool(f"{server}/draw")
    drawer.name = "draw"  # type: ignore[misc]
    toolkit = Toolkit()
    toolkit.register_tool_function(drawer, json_schema={
        "type": "object", "properties": {"prompt": {"type": "string"}}})
    out = await toolkit.execute(ToolUseBlock(id="1", name="draw", input={"prompt": "sea"}))
    assert out.output[0].type == "image"  # type: ignore[union-attr]
    assert base64.b64decode(out.output[0].source.data) == PNG  # type: ignore[union-attr]
    await captioner.aclose()
    await drawer.aclose()


async def test_http_errors_and_unreachable_endpoints_are_error_results(server: str) -> None:
    toolkit = Toolkit()
    toolkit.register_tool_function(RemoteTool(f"{server}/busy", tool_class=Translator))
    out = await toolkit.execute(ToolUseBlock(id="1", name="translator",
                                             input={"text": "a", "lang": "b"}))
    assert out.is_error and "HTTP 503: model is loading" in out.output
    dead = RemoteTool("http://127.0.0.1:9/x", tool_class=Translator, timeout=5)
    with pytest.raises(RemoteToolError, match="failed: ConnectError"):
        await dead(text="a", lang="b")
    with pytest.raises(ValueError, match="endpoint_url"):
        RemoteTool()
