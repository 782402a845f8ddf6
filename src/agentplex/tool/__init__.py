"""Tools: functions, classes and MCP servers an agent's model can call."""

from ._errors import RemoteToolError, UntrustedCodeError
from ._load import load_tool
from ._mcp import HttpMCPClient, MCPClient, MCPToolFunction, StdIOMCPClient
from ._pipeline import PipelineTool, TransformersPipelineTool, pipeline_tool
from ._remote import RemoteTool
from ._response import OutputBlock, ToolResponse
from ._schema import FunctionSchema, function_schema
from ._tool import Tool
from ._toolkit import META_TOOL, RegisteredTool, ToolGroup, Toolkit
from ._types import AgentAudio, AgentImage, AgentText, AgentType

__all__ = [
    "AgentAudio",
    "AgentImage",
    "AgentText",
    "AgentType",
    "FunctionSchema",
    "HttpMCPClient",
    "MCPClient",
    "MCPToolFunction",
    "META_TOOL",
    "OutputBlock",
    "PipelineTool",
    "RegisteredTool",
    "RemoteTool",
    "RemoteToolError",
    "StdIOMCPClient",
    "Tool",
    "ToolGroup",
    "ToolResponse",
    "Toolkit",
    "TransformersPipelineTool",
    "UntrustedCodeError",
    "function_schema",
    "load_tool",
    "pipeline_tool",
]
