"""The engine's errors.

The tree::

    EngineError       an engine could not serve (also a RuntimeError)
    ├── EngineClosed  this engine was closed: before the request was taken, or while it ran
    ├── UnsupportedModel  the model's attention is not one the paged cache serves
    └── EngineOptionError an engine argument out of its range

``EngineError`` is also what :mod:`agentplex.serving`'s launchers raise (and re-export) when
an engine's server (ours, vLLM, SGLang, llama.cpp) did not start, or died and may not be
restarted: one name to catch whichever engine failed.
"""

from __future__ import annotations

from ..errors import AgentplexError

__all__ = ["EngineClosed", "EngineError", "EngineOptionError", "UnsupportedModel"]


class EngineError(AgentplexError, RuntimeError):
    """An engine could not serve: this package's engine, or a served engine's server that
    did not start or died (a ``RuntimeError``, as both raised before they had their own)."""


class EngineClosed(EngineError):
    """The engine was closed: :meth:`BatchEngine.submit` refuses, and requests it held end
    with this error in their last event."""


class UnsupportedModel(EngineError, ValueError):
    """The model has attention layers other than full or sliding-window attention (chunked
    or linear attention, ...): the paged cache cannot serve it (also a ``ValueError``)."""


class EngineOptionError(EngineError, ValueError):
    """An argument of :class:`BatchEngine` is out of its range (``cpu_threads=0``): refused
    when the engine is made (also a ``ValueError``)."""
