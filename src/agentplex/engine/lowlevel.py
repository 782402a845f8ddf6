"""Plumbing for code that drives the engine from an event loop, or decodes text as it does.

:func:`handoff_for` gives a loop's :class:`LoopHandoff`, through which a request's ``emit``
(called on the engine's thread) reaches an ``asyncio.Queue`` with one wake-up of the loop per
engine step (:func:`deferred`). :func:`held_back` says how much of a growing text may still
become a stop sequence, for engines of other libraries that stream with stops (MLX).
"""

from ._handoff import LoopHandoff, deferred, handoff_for
from ._stopping import held_back

__all__ = ["LoopHandoff", "deferred", "handoff_for", "held_back"]
