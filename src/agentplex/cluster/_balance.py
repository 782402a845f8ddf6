"""Spreading calls over replicas by the number of requests outstanding on each."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["LeastOutstanding"]


class LeastOutstanding:
    """Picks the replica with the fewest requests outstanding (ties taken in turn)."""

    def __init__(self, replicas: int) -> None:
        if replicas < 1:
            raise ValueError("at least one replica")
        self.outstanding = [0] * replicas
        self._turn = itertools.count()

    def pick(self) -> int:
        least = min(self.outstanding)
        tied = [i for i, n in enumerate(self.outstanding) if n == least]
        return tied[next(self._turn) % len(tied)]

    @contextmanager
    def holding(self, index: int) -> Iterator[None]:
        """Count one request outstanding on replica ``index`` while the block runs."""
        self.outstanding[index] += 1
        try:
            yield
        finally:
            self.outstanding[index] -= 1
