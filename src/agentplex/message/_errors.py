"""Errors of the wire codec.

The tree::

    AgentplexError
    ├── DecodeError   input could not be decoded (also a ValueError)
    └── EncodeError   a value has no wire form (also a TypeError)
"""

from __future__ import annotations

from ..errors import AgentplexError

__all__ = ["DecodeError", "EncodeError"]


class DecodeError(AgentplexError, ValueError):
    """Input could not be decoded: malformed, truncated, oversized or of the wrong shape."""


class EncodeError(AgentplexError, TypeError):
    """A value has no wire form (it is not msgpack-able and not a registered model)."""
