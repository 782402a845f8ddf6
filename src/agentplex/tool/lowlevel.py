"""Tool plumbing: reading docstrings, tidying JSON schemas, normalising tool results.

Users build tools with :mod:`agentplex.tool` (``Toolkit``, ``Tool``, ``function_schema``);
these helpers are what the toolkit and agents use underneath (and ``import_file``, how
a file a user names by path is imported: a tool's code, a scenario).
"""

from ._modules import import_file
from ._response import to_tool_response
from ._schema import parse_docstring, tidy_schema
from ._types import media_block, sniff_media

__all__ = ["import_file", "media_block", "parse_docstring", "sniff_media", "tidy_schema",
           "to_tool_response"]
