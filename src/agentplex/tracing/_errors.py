"""Errors of experiments and replay.

The tree::

    AgentplexError
    └── ReplayMissing   replay met a request the recording never made (also a LookupError)
"""

from __future__ import annotations

from ..errors import AgentplexError

__all__ = ["ReplayMissing"]


class ReplayMissing(AgentplexError, LookupError):
    """Replay met a model request the recorded run never made."""
