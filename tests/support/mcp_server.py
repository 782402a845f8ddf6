"""A small MCP server the MCP tests start as a real process.

Usage: ``python -m tests.support.mcp_server`` (stdio) or
``python -m tests.support.mcp_server http PORT``.
Works with mcp 1.x (``FastMCP``) and 2.x (``MCPServer``).
"""

from __future__ import annotations

import base64
import sys

try:
    from mcp.server.mcpserver import MCPServer as Server
except ImportError:  # mcp 1.x
    # (the ignores are for the type checker where mcp 2.x is installed, unused with 1.x)
    from mcp.server.fastmcp import FastMCP as Server  # type: ignore[no-redef, attr-defined, unused-ignore]

from mcp.types import ImageContent, TextContent

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
http = len(sys.argv) > 2 and sys.argv[1] == "http"
port = int(sys.argv[2]) if http else 0
server = Server("test-tools")


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers.

    Args:
        a: the first
        b: the second
    """
    return str(a + b)


@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"failed because {reason}")


@server.tool()
def picture(caption: str) -> list[TextContent | ImageContent]:
    """Return a caption and a tiny picture."""
    try:
        return [TextContent(type="text", text=caption),
                ImageContent(type="image", data=PNG, mime_type="image/png")]
    except Exception:  # mcp 1.x field name
        return [TextContent(type="text", text=caption),
                ImageContent(type="image", data=PNG, mimeType="image/png")]


if __name__ == "__main__":
    if not http:
        server.run()
    else:
        try:
            server.run("streamable-http", host="127.0.0.1", port=port)
        except TypeError:  # mcp 1.x: host and port are settings
            server.settings.host, server.settings.port = "127.0.0.1", port  # type: ignore[attr-defined, unused-ignore]
            server.run("streamable-http")
