"""MCP servers as tool sources: clients over stdio and streamable HTTP.

Needs the ``mcp`` package (``pip install 'agentplex[mcp]'``); works with its 1.x and 2.x
releases. Connect a client (``async with`` or :meth:`MCPClient.connect`), then
``await toolkit.register_mcp_client(client)``; close it from the task that connected it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from ..message import (
    AudioBlock,
    Base64Source,
    ImageBlock,
    TextBlock,
    URLSource,
    VideoBlock,
)
from ._response import OutputBlock, ToolResponse

__all__ = ["HttpMCPClient", "MCPClient", "MCPToolFunction", "StdIOMCPClient"]


def _attr(obj: Any, *names: str, default: Any = None) -> Any:
    """Read the first present attribute (mcp 2.x renamed camelCase fields to snake_case)."""
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return default


class MCPToolFunction:
    """One tool of an MCP server, callable like an async function."""

    def __init__(self, client: MCPClient, tool: Any) -> None:
        self.client = client
        self.name: str = tool.name
        self.description: str = _attr(tool, "description", default="") or ""
        parameters = _attr(tool, "input_schema", "inputSchema", default=None)
        self.parameters: dict[str, Any] = dict(parameters or {"type": "object",
                                                              "properties": {}})
        self.__name__ = self.name

    @property
    def json_schema(self) -> dict[str, Any]:
        """The ``{"type": "function", ...}`` schema of the tool."""
        return {"type": "function", "function": {"name": self.name,
                                                 "description": self.description,
                                                 "parameters": self.parameters}}

    async def __call__(self, **kwargs: Any) -> ToolResponse:
        result = await self.client.session.call_tool(self.name, kwargs)
        return _to_response(result)

    def __repr__(self) -> str:
        return f"MCPToolFunction({self.name!r} from {self.client.name!r})"


class MCPClient:
    """A connection to one MCP server; subclasses say how to reach it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._stack: AsyncExitStack | None = None
        self._session: Any = None

    def _transport(self) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    @property
    def session(self) -> Any:
        """The ``mcp.ClientSession`` (only while connected)."""
        if self._session is None:
            raise RuntimeError(f"MCP client {self.name!r} is not connected")
        return self._session

    @property
    def connected(self) -> bool:
        return self._session is not None

    async def connect(self) -> None:
        """Start (or reach) the server and initialise the session."""
        if self._session is not None:
            return
        from mcp import ClientSession

        stack = AsyncExitStack()
        try:
            streams = await stack.enter_async_context(self._transport())
            session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
            await session.initialize()
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._session = stack, session

    async def close(self) -> None:
        """End the session (and the server process, for stdio)."""
        stack, self._stack, self._session = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> MCPClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def list_tools(self) -> list[Any]:
        """The server's tools (``mcp.types.Tool``), all pages."""
        tools: list[Any] = []
        cursor: str | None = None
        while True:
            if cursor is None:
                page = await self.session.list_tools()
            else:
                params = importlib.import_module("mcp.types").PaginatedRequestParams(cursor=cursor)
                page = await self.session.list_tools(params=params)
            tools.extend(page.tools)
            cursor = _attr(page, "next_cursor", "nextCursor")
            if not cursor:
                return tools

    async def get_tool_functions(self) -> list[MCPToolFunction]:
        """Every tool of the server as a callable."""
        return [MCPToolFunction(self, tool) for tool in await self.list_tools()]

    async def get_callable_function(self, name: str) -> MCPToolFunction:
        """The server's tool ``name`` as a callable."""
        for func in await self.get_tool_functions():
            if func.name == name:
                return func
        raise KeyError(f"MCP server {self.name!r} has no tool {name!r}")


class StdIOMCPClient(MCPClient):
    """An MCP server started as a subprocess, spoken to over its stdin and stdout."""

    def __init__(self, name: str, command: str, args: list[str] | None = None,
                 env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        super().__init__(name)
        self.command, self.args, self.env, self.cwd = command, list(args or []), env, cwd

    def _transport(self) -> AbstractAsyncContextManager[Any]:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=self.command, args=self.args, env=self.env,
                                       cwd=self.cwd)
        return stdio_client(params)


class HttpMCPClient(MCPClient):
    """An MCP server reached over streamable HTTP at ``url``."""

    def __init__(self, name: str, url: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(name)
        self.url, self.headers = url, dict(headers or {})

    def _transport(self) -> AbstractAsyncContextManager[Any]:
        return _http_streams(self.url, self.headers)


@asynccontextmanager
async def _http_streams(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    module = importlib.import_module("mcp.client.streamable_http")
    modern = getattr(module, "streamable_http_client", None)
    async with AsyncExitStack() as stack:
        if modern is not None and "http_client" in inspect.signature(modern).parameters:
            httpx_utils = importlib.import_module("mcp.shared._httpx_utils")
            client = httpx_utils.create_mcp_http_client(headers=headers or None)
            stack.push_async_callback(client.aclose)
            streams = await stack.enter_async_context(modern(url, http_client=client))
        else:
            streams = await stack.enter_async_context(
                module.streamablehttp_client(url, headers=headers or None))
        yield streams


def _to_response(result: Any) -> ToolResponse:
    blocks: list[OutputBlock] = []
    for item in _attr(result, "content", default=[]) or []:
        block = _to_block(item)
        if block is not None:
            blocks.append(block)
    structured = _attr(result, "structured_content", "structuredContent")
    is_error = bool(_attr(result, "is_error", "isError", default=False))
    return ToolResponse(content=blocks, is_error=is_error,
                        metadata={"structured_content": structured} if structured else None)


def _to_block(item: Any) -> OutputBlock | None:
    kind = getattr(item, "type", None)
    if kind == "text":
        return TextBlock(text=item.text)
    if kind in ("image", "audio"):
        mime = _attr(item, "mime_type", "mimeType", default="application/octet-stream")
        source = Base64Source(media_type=mime, data=item.data)
        return ImageBlock(source=source) if kind == "image" else AudioBlock(source=source)
    if kind == "resource":
        resource = item.resource
        text = getattr(resource, "text", None)
        if text is not None:
            return TextBlock(text=text)
        mime = _attr(resource, "mime_type", "mimeType", default="") or ""
        source = Base64Source(media_type=mime or "application/octet-stream", data=resource.blob)
        return _media_block(mime, source)
    if kind == "resource_link":
        mime = _attr(item, "mime_type", "mimeType", default="") or ""
        block = _media_block(mime, URLSource(url=str(item.uri)))
        return block if not isinstance(block, TextBlock) else TextBlock(text=str(item.uri))
    return TextBlock(text=str(item)) if item is not None else None


def _media_block(mime: str, source: Base64Source | URLSource) -> OutputBlock:
    if mime.startswith("image/"):
        return ImageBlock(source=source)
    if mime.startswith("audio/"):
        return AudioBlock(source=source)
    if mime.startswith("video/"):
        return VideoBlock(source=source)
    if isinstance(source, URLSource):
        return TextBlock(text=source.url)
    return TextBlock(text=f"[{mime or 'binary'} resource, {len(source.data)} base64 chars]")
