"""Errors of experiments, replay, prices and budgets.

The tree::

    AgentplexError
    ├── ReplayMissing   replay met a request the recording never made (also a LookupError)
    ├── InvalidPrices   a price file or price entry that cannot be read (also a ValueError)
    ├── InvalidBudget   a budget with a negative or non-number limit (also a ValueError)
    ├── NoRecording     a run to replay has no recording (also a FileNotFoundError)
    └── ExportFailed    a run could not be exported (its tracker is not installed, or
                        refused it; also a RuntimeError)
"""

from __future__ import annotations

from ..errors import AgentplexError

__all__ = ["ExportFailed", "InvalidBudget", "InvalidPrices", "NoRecording", "ReplayMissing"]


class ReplayMissing(AgentplexError, LookupError):
    """Replay met a model request the recorded run never made."""


class InvalidPrices(AgentplexError, ValueError):
    """A price file (or price entries) that is not a JSON object of LiteLLM-style prices."""


class InvalidBudget(AgentplexError, ValueError):
    """A budget limit that is not a number >= 0."""


class NoRecording(AgentplexError, FileNotFoundError):
    """A run to replay has no recording (none written, or made with ``--no-recording``)."""


class ExportFailed(AgentplexError, RuntimeError):
    """A run could not be exported: the tracker's package is missing, or it refused."""
