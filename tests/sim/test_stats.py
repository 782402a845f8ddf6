"""The statistics of sweeps against known values: Student-t quantiles (published
tables and the closed forms of 1 and 2 degrees of freedom) and mean intervals."""

from __future__ import annotations

import math

import pytest

from agentplex.sim import MeanCI, StatsError, mean_ci, t_quantile

# (p, df, t): to 12 digits, as R's qt(p, df) prints them
KNOWN = [
    (0.975, 1, 12.7062047361747),
    (0.975, 2, 4.30265272974946),
    (0.975, 3, 3.18244630528371),
    (0.975, 4, 2.77644510519779),
    (0.975, 5, 2.57058183563631),
    (0.975, 9, 2.26215716279820),
    (0.975, 10, 2.22813885198627),
    (0.975, 19, 2.09302405440831),
    (0.975, 30, 2.04227245630124),
    (0.975, 100, 1.98397151852355),
    (0.95, 1, 6.31375151467504),
    (0.95, 10, 1.81246112281168),
    (0.995, 4, 4.60409487134999),
    (0.9995, 1, 636.619248768772),
]


@pytest.mark.parametrize(("p", "df", "t"), KNOWN)
def test_t_quantile_matches_the_tables(p: float, df: int, t: float) -> None:
    assert t_quantile(p, df) == pytest.approx(t, rel=1e-10)
    assert t_quantile(1 - p, df) == pytest.approx(-t, rel=1e-10)


def test_t_quantile_matches_the_closed_forms() -> None:
    for k in range(1, 200):
        p = k / 200
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)),
                                                 rel=1e-10, abs=1e-12)
        assert t_quantile(p, 2) == pytest.approx(
            (2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10, abs=1e-12)


def test_t_quantile_nears_the_normal_for_many_degrees() -> None:
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959963984540054, rel=1e-6)


def test_mean_ci_is_the_student_interval() -> None:
    got = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.77644510519779 * math.sqrt(2.5) / math.sqrt(5)
    assert got.n == 5 and got.mean == 3.0
    assert got.low == pytest.approx(3.0 - half, rel=1e-12)
    assert got.high == pytest.approx(3.0 + half, rel=1e-12)
    narrow = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0], level=0.9)
    assert narrow.low is not None and got.low is not None and narrow.low > got.low


def test_one_value_has_no_interval_and_none_no_mean() -> None:
    assert mean_ci([4.0]) == MeanCI(4.0, None, None, 1)
    assert mean_ci([]) == MeanCI(None, None, None, 0)
    assert mean_ci([None, 2.0, None, 4.0]).n == 2  # type: ignore[list-item]
    assert mean_ci([7.0, 7.0, 7.0]) == MeanCI(7.0, 7.0, 7.0, 3)


def test_bad_levels_and_degrees_are_refused() -> None:
    for level in (0.0, 1.0, 95.0, -0.5):
        with pytest.raises(StatsError, match="between 0 and 1"):
            mean_ci([1.0, 2.0], level=level)
    with pytest.raises(StatsError, match="degrees of freedom"):
        t_quantile(0.975, 0)
    with pytest.raises(ValueError):  # StatsError is also a ValueError
        t_quantile(1.0, 3)
