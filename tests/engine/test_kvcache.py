"""The batch's key/value cache: rows joining are left-padded copies."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from agentplex.engine._kvcache import stack  # noqa: E402


def test_merged_rows_are_left_padded_copies() -> None:
    a, b = torch.randn(2, 3, 5, 4), torch.randn(3, 3, 2, 4)
    merged = stack(a, b, 2, 5)
    assert merged.shape == (5, 3, 5, 4)
    assert torch.equal(merged[:2], a) and torch.equal(merged[2:, :, 3:], b)
    assert not merged[2:, :, :3].any()
    mask = stack(torch.ones(1, 2, dtype=torch.long), torch.ones(2, 4, dtype=torch.long), 1, 4)
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
