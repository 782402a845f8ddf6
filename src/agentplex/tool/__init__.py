"""Tools: functions, classes and MCP servers an agent's model can call."""

from ._mcp import HttpMCPClient, MCPClient, MCPToolFunction, StdIOMCPClient
from ._response import OutputBlock, ToolResponse, to_tool_response
from ._schema import FunctionSchema, function_schema, parse_docstring, tidy_schema
from ._tool import Tool
from ._toolkit import META_TOOL, RegisteredTool, ToolGroup, Toolkit

__all__ = [
    "META_TOOL",
    "FunctionSchema",
    "HttpMCPClient",
    "MCPClient",
    "MCPToolFunction",
    "OutputBlock",
    "RegisteredTool",
    "StdIOMCPClient",
    "Tool",
    "ToolGroup",
    "ToolResponse",
    "Toolkit",
    "function_schema",
    "parse_docstring",
    "tidy_schema",
    "to_tool_response",
]
