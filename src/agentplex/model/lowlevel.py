"""Building blocks for authors of providers (and of agents that format for them).

Users call models through :mod:`agentplex.model`; a provider (or a model hosted elsewhere)
assembles its streamed chunks with :class:`ResponseBuilder` (each chunk carries the whole
response so far and the new part) and parses a tool call's JSON arguments, once complete,
with :func:`parse_tool_arguments`. :func:`estimate_tokens` is the token estimate models
without a count endpoint or tokenizer use; :func:`to_messages` turns LangChain-style input
into a history; :func:`multi_agent_layout` is the multi-agent formatters' layout.
:func:`counted_by_caller` is for hosts of models called from elsewhere (model actors).
"""

from ._agentscope_formatters import multi_agent_layout
from ._instrumentation import counted_by_caller
from ._runnable import to_messages
from ._stream import ResponseBuilder, parse_tool_arguments
from ._tokens import TokenCounting, estimate_text_tokens, estimate_tokens

__all__ = [
    "ResponseBuilder",
    "TokenCounting",
    "counted_by_caller",
    "estimate_text_tokens",
    "estimate_tokens",
    "multi_agent_layout",
    "parse_tool_arguments",
    "to_messages",
]
