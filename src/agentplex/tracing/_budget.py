"""A ceiling on what a run may spend, checked between rounds.

::

    budget = Budget(max_cost_usd=5.0, max_tokens=2_000_000)
    for n in rounds:
        with in_round(n):
            await step()
        reason = budget.exceeded(run.ledger)
        if reason is not None:
            ...  # stop cleanly: status "budget", the reason in the manifest
"""

from __future__ import annotations

import math

from ._errors import InvalidBudget
from ._ledger import Ledger
from ._prices import Prices, prices

__all__ = ["Budget"]


def _limit(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or value < 0:
        raise InvalidBudget(f"{name} is a number >= 0 (or None for no limit), not {value!r}")
    return value


class Budget:
    """Limits on a run's model usage: ``max_cost_usd`` (priced models only, see
    :class:`Prices`) and ``max_tokens`` (input and output tokens of every model)."""

    def __init__(self, max_cost_usd: float | None = None, max_tokens: int | None = None,
                 *, prices: Prices | None = None) -> None:
        self.max_cost_usd = _limit("max_cost_usd", max_cost_usd)
        self.max_tokens = _limit("max_tokens", max_tokens)
        self._prices = prices

    def __repr__(self) -> str:
        return f"Budget(max_cost_usd={self.max_cost_usd!r}, max_tokens={self.max_tokens!r})"

    @property
    def limited(self) -> bool:
        """Whether any limit is set."""
        return self.max_cost_usd is not None or self.max_tokens is not None

    def exceeded(self, ledger: Ledger) -> str | None:
        """Why ``ledger`` is at or over a limit (a sentence), or ``None`` while within it.

        Reaching a limit counts as exceeding it: a run stopped at ``max_tokens=1000`` used
        at least 1000 tokens."""
        if self.max_tokens is not None:
            tokens = ledger.total().tokens
            if tokens >= self.max_tokens:
                return f"{tokens:,} tokens used, the budget is {int(self.max_tokens):,}"
        if self.max_cost_usd is not None:
            table = self._prices if self._prices is not None else prices()
            cost, unpriced = table.costs(ledger)
            if cost is not None and cost >= self.max_cost_usd:
                more = f" (and {unpriced:,} calls of models without a price)" if unpriced else ""
                return f"${cost:.4f} spent{more}, the budget is ${self.max_cost_usd:.4f}"
        return None
