"""What a forward pass costs, fitted online as ``fixed + per_token * tokens``.

On a GPU a small model's pass costs about the same whatever its size (kernel launches
dominate); on a CPU it grows with the tokens computed. Sizing the prefill chunks that join a
running batch needs the *marginal* cost of a token: dividing a pass's time by its tokens
instead makes small chunks look expensive on a GPU, which shrinks them further.
"""

from __future__ import annotations

__all__ = ["PassCost"]


class PassCost:
    """An exponentially weighted least-squares fit of seconds against tokens per pass."""

    def __init__(self, decay: float = 0.95) -> None:
        self.decay = decay
        self._w = self._n = self._t = self._nn = self._nt = 0.0

    def observe(self, tokens: int, seconds: float) -> None:
        """Record one pass that computed ``tokens`` tokens in ``seconds``."""
        d = self.decay
        self._w = d * self._w + 1.0
        self._n = d * self._n + tokens
        self._t = d * self._t + seconds
        self._nn = d * self._nn + tokens * tokens
        self._nt = d * self._nt + tokens * seconds

    def per_token(self) -> float | None:
        """Seconds one more token adds to a pass (``0.0`` when size does not matter), or
        ``None`` before passes of different sizes were seen."""
        if self._w == 0:
            return None
        spread = self._w * self._nn - self._n * self._n
        if spread <= 1e-9 * self._nn * self._w:
            return None
        return max(0.0, (self._w * self._nt - self._n * self._t) / spread)
