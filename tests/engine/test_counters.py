"""Counters: a pass's cost is fitted as fixed plus per token, and passes are counted."""

from __future__ import annotations

import pytest

from agentplex.engine import EngineCounters
from agentplex.engine._cost import PassCost


def test_pass_cost_fits_the_marginal_cost_of_a_token() -> None:
    linear, fixed = PassCost(), PassCost()
    assert linear.per_token() is None  # nothing seen yet
    for tokens in (8, 30, 120, 8, 500, 64):
        linear.observe(tokens, 0.002 + 0.001 * tokens)  # a CPU: time grows with tokens
        fixed.observe(tokens, 0.045)  # a GPU running a small model: launches dominate
    assert linear.per_token() == pytest.approx(0.001)
    assert fixed.per_token() == pytest.approx(0.0, abs=1e-9)
    same = PassCost()
    for _ in range(3):
        same.observe(8, 0.04)
    assert same.per_token() is None  # one size only: no slope to fit


def test_passes_are_counted_by_kind() -> None:
    counts = EngineCounters()
    counts.count_pass(0, 300, 0.3)  # a prefill
    counts.count_pass(4, 0, 0.04)  # a decode step
    counts.count_pass(4, 60, 0.064)  # a decode step carrying a chunk
    counts.count_pass(8, 0, 0.06)
    assert (counts.steps, counts.max_rows_seen, counts.mixed_steps) == (4, 8, 1)
    assert counts.prefill_tokens == 360
    assert counts.forward_seconds == pytest.approx(0.464)
    assert counts.prefill_seconds == pytest.approx(0.3 + 0.064 * 60 / 64)
    assert counts.decode_cost == pytest.approx(0.04 + 0.3 * (0.06 - 0.04))  # decode only
