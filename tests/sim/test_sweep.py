"""Sweeps from Python (``agentplex.sim.run_sweep``): the grid's arms are every
combination, in order, with the seeds given; the summary of a sweep folder counts what
each finished run recorded, and nothing of a failed one."""

from __future__ import annotations

import asyncio
import csv
import math
from pathlib import Path

import pytest

from agentplex.sim import (
    Sweep,
    SweepArm,
    SweepError,
    SweepOptions,
    SweepRun,
    mean_ci,
    read_sweep,
    run_sweep,
    summarize_sweep,
)
from agentplex.sim.lowlevel import parse_grid, parse_seeds, write_summary, write_table

STEADY = str(Path(__file__).parents[1] / "support" / "sweep_scenario.py") + ":Steady"


def test_grid_and_seeds_are_read_as_typed() -> None:
    assert parse_grid(["eps=0.1, 0.3", "model=a,b"]) == {"eps": ["0.1", "0.3"],
                                                        "model": ["a", "b"]}
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("7,3") == [7, 3]
    assert parse_seeds("5,") == [5]
    for bad in ("-1", "0", "1.5", "a,b", ",", "2,2"):
        with pytest.raises(SweepError):
            parse_seeds(bad)
    for bad_grid in (["eps"], ["eps="], ["=1"], ["eps=1", "eps=2"]):
        with pytest.raises(SweepError):
            parse_grid(bad_grid)


def test_the_arms_are_every_combination_of_the_grid(tmp_path: Path) -> None:
    options = SweepOptions(scenario=STEADY, grid=parse_grid(["offset=1,2", "sleep=0,0.01"]),
                           seeds=[3], agents=2, rounds=1, parallel=2, runs_dir=tmp_path,
                           name="g")
    lines: list[str] = []
    done = asyncio.run(run_sweep(options, log=lines.append))
    assert done.status == "completed" and not done.failed()
    assert [a.name for a in done.arms] == ["offset=1 sleep=0", "offset=1 sleep=0.01",
                                           "offset=2 sleep=0", "offset=2 sleep=0.01"]
    assert [a.params for a in done.arms] == [{"offset": 1, "sleep": 0},
                                             {"offset": 1, "sleep": 0.01},
                                             {"offset": 2, "sleep": 0},
                                             {"offset": 2, "sleep": 0.01}]
    assert done.grid == {"offset": [1, 2], "sleep": [0, 0.01]}
    assert read_sweep(tmp_path / "g") == done
    values = {(r.arm, r.metric): r for r in summarize_sweep(tmp_path / "g")}
    assert values[("offset=2 sleep=0.01", "value")].mean == 3 + 2 + 1  # seed + offset + round
    assert values[("offset=2 sleep=0.01", "value")].n == 1
    assert any("4 run(s) to go" in line for line in lines)


def _folder(tmp_path: Path, runs: dict[str, list[dict[str, object]]],
            statuses: dict[str, str]) -> Path:
    folder = tmp_path / "hand"
    for run_id, rows in runs.items():
        (folder / "runs" / run_id).mkdir(parents=True)
        write_table(folder / "runs" / run_id / "metrics.parquet", rows, ["round"])
    sweep = Sweep(id="hand", scenario=STEADY, grid={"x": [1]}, seeds=[0, 1, 2, 3], agents=1,
                  rounds=2, arms=[SweepArm(name="x=1", params={"x": 1}, runs=[
                      SweepRun(seed=i, run=run_id, status=statuses[run_id])
                      for i, run_id in enumerate(runs)])])
    (folder / "sweep.json").write_text(sweep.model_dump_json())
    return folder


def test_the_summary_counts_finished_runs_only(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {
        "a": [{"round": 1, "v": 1.0, "ok": True, "word": "x"},
              {"round": 2, "v": 2.0, "ok": True, "word": "y"}],
        "b": [{"round": 1, "v": 3.0, "ok": False, "word": "x"},
              {"round": 2, "v": math.nan, "ok": False, "word": "y"}],
        "c": [{"round": 1, "v": 5.0, "ok": True, "word": "z"}],  # stopped by its budget
        "d": [{"round": 1, "v": 1000.0, "ok": True, "word": "z"}],  # failed: left out
    }, {"a": "completed", "b": "completed", "c": "budget", "d": "failed"})
    rows = summarize_sweep(folder)
    assert [(r.round, r.metric) for r in rows] == [(1, "v"), (1, "ok"), (2, "v"), (2, "ok")]
    got = {(r.round, r.metric): r for r in rows}
    assert got[(1, "v")][3:] == tuple(mean_ci([1.0, 3.0, 5.0]))
    assert got[(1, "ok")].mean == pytest.approx(2 / 3) and got[(1, "ok")].n == 3
    assert got[(2, "v")][3:] == (2.0, None, None, 1)  # NaN left out: one value, no interval
    assert got[(2, "ok")].n == 2
    write_summary(folder, rows)
    with (folder / "summary.csv").open() as f:
        table = list(csv.reader(f))
    assert table[0] == ["arm", "round", "metric", "mean", "ci_low", "ci_high", "n"]
    assert table[3] == ["x=1", "2", "v", "2.0", "", "", "1"]
    assert float(table[1][4]) == got[(1, "v")].ci_low  # written to the last digit


def test_a_folder_without_sweep_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="not a sweep folder"):
        read_sweep(tmp_path)
