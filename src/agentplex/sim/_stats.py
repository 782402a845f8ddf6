"""The statistics of a sweep: a mean and its Student-t confidence interval across seeds.

No scipy: the t quantile is found by bisection on the t distribution's tail, written
with the regularized incomplete beta function (a continued fraction), to about 1e-12.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from ._errors import StatsError

__all__ = ["MeanCI", "mean_ci", "t_quantile"]


class MeanCI(NamedTuple):
    """A mean with its confidence interval. ``low``/``high`` are ``None`` when ``n < 2``
    (one seed gives no interval); ``mean`` is ``None`` when ``n == 0``."""

    mean: float | None
    low: float | None
    high: float | None
    n: int


def mean_ci(values: Iterable[float], level: float = 0.95) -> MeanCI:
    """The mean of ``values`` and its two-sided ``level`` Student-t interval:
    ``mean ± t(1 - (1 - level) / 2, n - 1) · s / √n`` with ``s`` the sample standard
    deviation. ``None`` values are left out."""
    if not 0.0 < level < 1.0:
        raise StatsError(f"a confidence level is between 0 and 1, not {level!r}")
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if n == 0:
        return MeanCI(None, None, None, 0)
    mean = math.fsum(xs) / n
    if n == 1:
        return MeanCI(mean, None, None, 1)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(1.0 - (1.0 - level) / 2.0, n - 1) * sd / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, n)


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom
    (``t_quantile(0.975, 4)`` is 2.7764...)."""
    if not 0.0 < p < 1.0:
        raise StatsError(f"a quantile's probability is between 0 and 1, not {p!r}")
    if not df > 0:
        raise StatsError(f"degrees of freedom must be positive, not {df!r}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    tail = 1.0 - p  # find t > 0 whose upper tail is `tail`; the tail falls as t grows
    lo, hi = 0.0, 1.0
    while _upper_tail(hi, df) > tail:
        lo, hi = hi, hi * 2.0
        if hi > 1e300:  # pragma: no cover - p this close to 1 is beyond float
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _upper_tail(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return 0.5 * (lo + hi)


def _upper_tail(t: float, df: float) -> float:
    """P(T > t) for t ≥ 0: ½ I_x(df/2, ½) with x = df / (df + t²)."""
    return 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-16
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h
