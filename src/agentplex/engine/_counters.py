"""What the engine counts: passes, rows, tokens and seconds, and the fitted cost of a pass.

One :class:`EngineCounters` per engine. The model runner records each forward pass
(:meth:`EngineCounters.count_pass`); choosing tokens adds to ``select_seconds``; the
scheduler sizes prefill chunks from the fitted costs (``cost``, ``step_cost``,
``decode_cost``). Read from any thread; written by the engine's worker only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._cost import PassCost

__all__ = ["EngineCounters"]


@dataclass
class EngineCounters:
    """An engine's running totals (since it was made) and the cost fits it sizes chunks by."""

    steps: int = 0
    """Forward passes run so far (prefills and decode steps)."""
    max_rows_seen: int = 0
    """The largest batch decoded so far."""
    forward_seconds: float = 0.0
    """Time spent in the model's forward passes (on CUDA, until the GPU finished them)."""
    prefill_seconds: float = 0.0
    """The part of ``forward_seconds`` spent on prompts (the rest is decode steps)."""
    select_seconds: float = 0.0
    """Time spent choosing tokens (grammar masks, sampling, stop checks, detokenizing)."""
    prefill_tokens: int = 0
    """Prompt tokens computed so far (tokens served from the prefix cache excluded)."""
    chunks: int = 0
    """Prefill chunks run while others decode."""
    packed_passes: int = 0
    """Prefill passes whose rows' new tokens went through the model packed (no padding)."""
    shared_steps: int = 0
    """Decode steps that attended to their rows' common leading blocks once for all rows."""
    mixed_steps: int = 0
    """Forward passes that decoded the batch and prefilled a chunk together."""
    decode_cost: float = 0.0
    """Seconds of a decode pass without a chunk (a moving average; 0 before the first)."""
    cost: PassCost = field(default_factory=PassCost)
    """Seconds against tokens, over every pass."""
    step_cost: PassCost = field(default_factory=PassCost)
    """Seconds against tokens, over decode passes (with or without a chunk riding)."""

    def count_pass(self, rows: int, prompt_tokens: int, seconds: float) -> None:
        """Count one forward pass of ``rows`` decode rows (a token each) and
        ``prompt_tokens`` prompt tokens that took ``seconds``."""
        tokens = rows + prompt_tokens
        self.steps += 1
        self.forward_seconds += seconds
        self.prefill_seconds += seconds * prompt_tokens / tokens  # the prompts' share
        self.prefill_tokens += prompt_tokens
        self.cost.observe(tokens, seconds)
        if rows:  # a decode step, a chunk riding in it or not
            self.step_cost.observe(tokens, seconds)
            self.max_rows_seen = max(self.max_rows_seen, rows)
            if prompt_tokens:
                self.mixed_steps += 1
            else:
                self.decode_cost = _ema(self.decode_cost, seconds)


def _ema(old: float, new: float, weight: float = 0.3) -> float:
    return new if not old else old + weight * (new - old)
