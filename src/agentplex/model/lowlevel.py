"""Building blocks for authors of providers: streamed responses and tool-call arguments.

Users call models through :mod:`agentplex.model`; a provider (or a model hosted elsewhere)
assembles its streamed chunks with :class:`ResponseBuilder` (each chunk carries the whole
response so far and the new part) and parses a tool call's JSON arguments, once complete,
with :func:`parse_tool_arguments`.
"""

from ._stream import ResponseBuilder, parse_tool_arguments

__all__ = ["ResponseBuilder", "parse_tool_arguments"]
