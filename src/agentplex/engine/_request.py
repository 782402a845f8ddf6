"""What callers hand the engine and what it hands back: requests, sampling, events.

A :class:`GenerationRequest` is both: the caller fills the prompt and its options, and the
engine keeps the request's progress on it (tokens so far, text, finish reason). Its fields
starting with ``_`` are the engine's bookkeeping (decoding windows, what was shown, pending
log-probabilities, the seed of its draws); callers leave them alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GenerationEvent", "GenerationRequest", "Sampling", "TokenScore"]


@dataclass(frozen=True)
class Sampling:
    """Per-request sampling: greedy when ``temperature`` is 0."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None


TokenScore = tuple[str, float, list[tuple[str, float]]]
"""A generated token, its log-probability, and the most likely tokens with theirs."""


@dataclass
class GenerationEvent:
    """What the worker reports: new text, and at the end the finish reason (or an error)."""

    text: str = ""
    output_tokens: int = 0
    finish_reason: str | None = None
    error: BaseException | None = None
    logprobs: list[TokenScore] = field(default_factory=list)
    """The new tokens' log-probabilities, when the request asked for them."""


@dataclass
class GenerationRequest:
    """One prompt to continue; ``emit`` is called from the worker thread.

    ``finish_reason`` ends as ``stop`` (an end-of-sequence token, a stop sequence or a
    finished grammar), ``length`` (``max_new_tokens`` reached), ``cancelled`` or ``error``.
    """

    prompt_ids: list[int]
    max_new_tokens: int
    emit: Callable[[GenerationEvent], None]
    sampling: Sampling = field(default_factory=Sampling)
    stop: tuple[str, ...] = ()
    matcher: Any = None
    """A grammar matcher (from :meth:`GrammarFactory.matcher`) the output must satisfy."""
    logprobs: int | None = None
    """``None``: no log-probabilities; ``k``: each token's, with the ``k`` most likely."""
    stream: bool = True
    """Whether text is sent as it comes; if not, the final event carries all of it."""
    cancelled: bool = False
    generated: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    finish_reason: str | None = None
    _seed: int = 0
    _decoded: str = ""
    _prefix: int = 0
    _read: int = 0
    _seen: int = 0
    _scores: list[TokenScore] = field(default_factory=list)

    def cancel(self) -> None:
        """Ask the worker to drop this request at its next step."""
        self.cancelled = True
