"""Metrics per round of several runs or sweep arms, side by side: what ``agentplex runs
compare`` draws and ``agentplex runs show`` prints for a sweep.

A run folder holds ``metrics.parquet`` (one row per round). A sweep folder holds
``sweep.json`` (its arms, seeds and run ids), its runs under ``runs/`` and
``summary.csv`` (per arm, round and metric: the mean across seeds and its 95 % interval);
where ``summary.csv`` is missing it is computed from the arms' finished runs.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..tracing.lowlevel import SWEEP_RECORD
from ._errors import RunNotFound, SweepError, UnknownMetric
from ._store import read_metrics
from ._sweep import SUMMARY_COLUMNS, SummaryRow, Sweep, read_sweep, summarize_sweep

__all__ = ["Comparison", "Series", "compare", "find_target", "is_sweep", "sweep_summary"]

SWEEP_FILE = SWEEP_RECORD
SUMMARY_FILE = "summary.csv"


@dataclass
class Series:
    """One line of a chart: a run's metric per round, or a sweep arm's mean per round
    with its interval (``low``/``high``, ``None`` where it has none) and seed count."""

    label: str
    rounds: list[int]
    values: list[float]
    low: list[float | None] | None = None
    high: list[float | None] | None = None
    n: list[int] | None = None

    @property
    def band(self) -> bool:
        """Whether the series has an interval to draw."""
        return self.low is not None and any(v is not None for v in self.low)


@dataclass
class Comparison:
    """Each metric's series, in the order asked for."""

    metrics: dict[str, list[Series]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def rounds(self, metric: str) -> list[int]:
        """Every round any series of ``metric`` has, in order."""
        return sorted({r for s in self.metrics[metric] for r in s.rounds})


def is_sweep(folder: Path) -> bool:
    """Whether ``folder`` is a sweep folder (it has a ``sweep.json``)."""
    return (folder / SWEEP_FILE).is_file()


def _load(folder: Path) -> Sweep:
    """The ``sweep.json`` of ``folder``; :class:`SweepError` if it cannot be read."""
    try:
        return read_sweep(folder)
    except (OSError, ValueError, ValidationError) as exc:
        if isinstance(exc, SweepError):
            raise
        raise SweepError(f"{folder / SWEEP_FILE} cannot be read: {exc}") from None


def find_target(name: str | Path, runs_dir: Path) -> Path:
    """The run or sweep folder ``name`` stands for: a path to one, ``latest`` (the latest
    run), or a run or sweep id or a unique part of one, looked up in ``runs_dir``, its
    sweeps, and the runs of its sweeps. :class:`RunNotFound` if none or several match."""
    path = Path(name)
    if (path / "manifest.json").is_file() or is_sweep(path):
        return path
    text = str(name)
    if text == "latest":
        from ..tracing import find_run

        try:
            return find_run(text, runs_dir)
        except (FileNotFoundError, LookupError) as exc:
            raise RunNotFound(str(exc)) from None
    folders = [p.parent for p in runs_dir.glob("*/manifest.json")]
    folders += [p.parent for p in runs_dir.glob(f"*/{SWEEP_FILE}")]
    folders += [p.parent for p in runs_dir.glob("*/runs/*/manifest.json")
                if is_sweep(p.parents[2])]
    exact = [f for f in folders if f.name == text]
    matches = exact or [f for f in folders if text in f.name]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunNotFound(f"no run or sweep {text!r} in {runs_dir}")
    raise RunNotFound(f"{text!r} matches {len(matches)} runs and sweeps "
                      f"({', '.join(sorted(f.name for f in matches)[:5])}); give more of it")


def _number(value: Any) -> float | None:
    """A metric's value as drawn: numbers (booleans as 0 and 1, as a sweep's summary
    counts them); ``None`` for text and for what is not finite."""
    if not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _float(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def sweep_summary(folder: Path, sweep: Sweep | None = None) -> list[SummaryRow]:
    """The rows of the sweep's ``summary.csv``, or, where it has none yet, the same
    computed from its arms' finished runs (:func:`~agentplex.sim.summarize_sweep`)."""
    path = folder / SUMMARY_FILE
    if not path.is_file():
        return summarize_sweep(folder, sweep or _load(folder))
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(SUMMARY_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise SweepError(f"{path} lacks the columns {', '.join(sorted(missing))}")
        for row in reader:
            rnd = _float(row["round"])
            if rnd is None:
                continue
            rows.append(SummaryRow(row["arm"], int(rnd), row["metric"], _float(row["mean"]),
                                   _float(row["ci_low"]), _float(row["ci_high"]),
                                   int(_float(row["n"]) or 0)))
    return rows


def _run_series(folder: Path) -> dict[str, Series]:
    rows = sorted((r for r in read_metrics(folder) if isinstance(r.get("round"), int)),
                  key=lambda r: int(r["round"]))
    out: dict[str, Series] = {}
    for row in rows:
        for key, value in row.items():
            number = _number(value)
            if key == "round" or number is None:
                continue
            series = out.setdefault(key, Series(folder.name, [], []))
            series.rounds.append(int(row["round"]))
            series.values.append(number)
    return out


def _sweep_series(folder: Path, sweep: Sweep, prefix: str) -> dict[str, list[Series]]:
    arms: dict[tuple[str, str], Series] = {}
    order = {a.name: i for i, a in enumerate(sweep.arms)}
    rows = sorted((r for r in sweep_summary(folder, sweep) if r.mean is not None),
                  key=lambda r: (order.get(r.arm, len(order)), r.arm, r.round))
    for row in rows:
        assert row.mean is not None
        s = arms.get((row.metric, row.arm))
        if s is None:
            s = arms[(row.metric, row.arm)] = Series(f"{prefix}{row.arm}", [], [], [], [], [])
        assert s.low is not None and s.high is not None and s.n is not None
        s.rounds.append(row.round)
        s.values.append(row.mean)
        s.low.append(row.ci_low)
        s.high.append(row.ci_high)
        s.n.append(row.n)
    out: dict[str, list[Series]] = {}
    for (metric, _), series in arms.items():
        out.setdefault(metric, []).append(series)
    return out


def _params(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    params = (manifest.get("config") or {}).get("params")
    return params if isinstance(params, dict) else {}


def _differing(folder: Path, folders: Sequence[Path]) -> str:
    """`` (eps=0.1)``: the run's parameters that differ between the runs compared."""
    runs = [f for f in folders if not is_sweep(f)]
    if len(runs) < 2:
        return ""
    every = [_params(f) for f in runs]
    mine = _params(folder)
    keys = [k for k in dict.fromkeys(k for p in every for k in p)
            if len({json.dumps(p.get(k), sort_keys=True) for p in every}) > 1]
    shown = ", ".join(f"{k}={mine[k]}" for k in keys if k in mine)
    return f" ({shown})" if shown else ""


def compare(folders: Sequence[Path], metrics: Sequence[str] = ()) -> Comparison:
    """The series of ``metrics`` (default: every numeric metric, in order of appearance)
    of each run folder and each arm of each sweep folder in ``folders``.
    :class:`UnknownMetric` for a metric that none of them has (its message lists the
    known ones)."""
    sweeps = sum(is_sweep(f) for f in folders)
    found: dict[str, list[Series]] = {}
    sources = []
    for folder in folders:
        if is_sweep(folder):
            sweep = _load(folder)
            sources.append(sweep.id)
            for metric, series in _sweep_series(
                    folder, sweep, f"{sweep.id}: " if sweeps > 1 or len(folders) > sweeps
                    else "").items():
                found.setdefault(metric, []).extend(series)
        else:
            sources.append(folder.name)
            label = folder.name + _differing(folder, folders)
            for metric, one in _run_series(folder).items():
                one.label = label
                found.setdefault(metric, []).append(one)
    wanted = list(metrics) or list(found)
    if not wanted:
        raise UnknownMetric(f"{', '.join(sources)} recorded no numeric metric per round "
                            "(metrics.parquet, or a sweep's summary.csv)", known=[])
    unknown = [m for m in wanted if m not in found]
    if unknown:
        known = ", ".join(found) or "none (no metrics.parquet or summary rows)"
        raise UnknownMetric(
            f"no metric {', '.join(repr(m) for m in unknown)} in "
            f"{', '.join(sources)}; the known metrics: {known}", known=list(found))
    return Comparison({m: found[m] for m in wanted}, sources)
