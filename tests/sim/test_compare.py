"""Comparing runs and sweep arms per round (``agentplex runs compare``, ``runs show`` of a
sweep): the figures against the run folders' own metrics, a PNG looked at pixel by pixel,
and the HTML page as headless Chromium loads and draws it."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from matplotlib.image import imread

from agentplex.sim import (
    RunNotFound,
    SweepError,
    UnknownMetric,
    compare,
    find_target,
    read_sweep,
    sweep_summary,
)
from tests.support.chromium import dump_dom, needs_chromium, screenshot
from tests.support.sweep_folder import OPINION, agentplex, make_sweep, run_once

METRICS = ["mean", "spread", "clusters", "answered"]
T2 = 4.302652729911275  # Student's t, 0.975 quantile, 2 degrees of freedom
BLUE, ORANGE = (0x1F / 255, 0x77 / 255, 0xB4 / 255), (0xFF / 255, 0x7F / 255, 0x0E / 255)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two runs of the opinion scenario that differ in their confidence bound."""
    root = tmp_path_factory.mktemp("runs")
    return [run_once(root, OPINION, "--agents", "80", "--rounds", "5", "--seed", "3",
                     "--set", f"eps={eps}") for eps in (0.1, 0.4)]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep folder (no summary.csv): eps 0.1 and 0.3, three seeds each."""
    return make_sweep(tmp_path_factory.mktemp("sweeps") / "sweep-eps", {"eps": [0.1, 0.3]},
                      [0, 1, 2], agents=60, rounds=4)


def metrics(folder: Path) -> list[dict[str, Any]]:
    return list(pq.read_table(folder / "metrics.parquet").to_pylist())


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's signature and IHDR chunk (which must be first)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def near(image: np.ndarray[Any, Any], color: tuple[float, float, float],
         tol: float = 0.08) -> int:
    """Pixels of ``image`` (RGB(A) floats) within ``tol`` of ``color`` in every channel."""
    return int((np.abs(image[..., :3] - np.array(color)) < tol).all(axis=-1).sum())


def tint(color: tuple[float, float, float], alpha: float = 0.2) -> tuple[float, float, float]:
    """``color`` at ``alpha`` over white: a band's colour."""
    r, g, b = (alpha * c + (1 - alpha) for c in color)
    return r, g, b


# --- the numbers ---------------------------------------------------------------------

def test_runs_compare_with_their_own_metrics(runs: list[Path]) -> None:
    comparison = compare(runs, ["mean", "clusters"])
    assert list(comparison.metrics) == ["mean", "clusters"]
    for folder, series in zip(runs, comparison.metrics["mean"], strict=True):
        rows = metrics(folder)
        eps = json.loads((folder / "manifest.json").read_text())["config"]["params"]["eps"]
        assert series.label == f"{folder.name} (eps={eps})" and not series.band
        assert series.rounds == [r["round"] for r in rows] == [1, 2, 3, 4, 5]
        assert series.values == [r["mean"] for r in rows]
    # every numeric metric by default, in the order the run recorded them
    assert list(compare(runs).metrics) == METRICS


def test_sweep_summary_is_computed_from_the_finished_runs(sweep: Path) -> None:
    data = json.loads((sweep / "sweep.json").read_text())
    summary = sweep_summary(sweep)
    assert len(summary) == 2 * 4 * len(METRICS)  # arms x rounds x metrics
    for arm in data["arms"]:
        per_seed = [metrics(sweep / "runs" / r["run"]) for r in arm["runs"]]
        for rnd in range(1, 5):
            values = [rows[rnd - 1]["mean"] for rows in per_seed]
            (row,) = [r for r in summary if (r.arm, r.round, r.metric)
                      == (arm["name"], rnd, "mean")]
            half = T2 * statistics.stdev(values) / math.sqrt(3)
            assert row.n == 3 and row.mean == pytest.approx(statistics.mean(values))
            assert row.ci_low == pytest.approx(statistics.mean(values) - half, abs=1e-9)
            assert row.ci_high == pytest.approx(statistics.mean(values) + half, abs=1e-9)
    # the metrics in the order the runs recorded them
    assert list(dict.fromkeys(r.metric for r in summary)) == METRICS


def test_a_failed_run_is_left_out_and_summary_csv_wins(sweep: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(sweep, tmp_path / "copy")
    data = json.loads((copy / "sweep.json").read_text())
    data["arms"][0]["runs"][0]["status"] = "failed"
    (copy / "sweep.json").write_text(json.dumps(data))
    series = compare([copy], ["mean"]).metrics["mean"]
    assert [s.label for s in series] == ["eps=0.1", "eps=0.3"]
    assert series[0].n == [2] * 4 and series[1].n == [3] * 4
    kept = [metrics(copy / "runs" / r["run"]) for r in data["arms"][0]["runs"][1:]]
    assert series[0].values == pytest.approx([statistics.mean(k[i]["mean"] for k in kept)
                                              for i in range(4)])
    # the sweep's own summary.csv, where it has one, is what is drawn
    with (copy / "summary.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["arm", "round", "metric", "mean", "ci_low", "ci_high", "n"])
        out.writerow(["eps=0.1", 1, "mean", 0.123456, 0.1, 0.15, 3])
        out.writerow(["eps=0.1", 2, "mean", 0.234567, "", "", 1])
    (one,) = compare([copy], ["mean"]).metrics["mean"]
    assert (one.rounds, one.values, one.low, one.high, one.n) == (
        [1, 2], [0.123456, 0.234567], [0.1, None], [0.15, None], [3, 1])
    (copy / "summary.csv").write_text("arm,round\nx,1\n")
    with pytest.raises(SweepError, match="lacks the columns"):
        compare([copy])


def test_unknown_metric_lists_the_known_ones(runs: list[Path], sweep: Path) -> None:
    with pytest.raises(UnknownMetric) as caught:
        compare([*runs, sweep], ["mean", "polarisation"])
    assert caught.value.known == METRICS
    assert "'polarisation'" in str(caught.value)
    assert "mean, spread, clusters, answered" in str(caught.value)


def test_targets_by_id_part_or_path(runs: list[Path], sweep: Path) -> None:
    assert find_target(runs[0], Path("nowhere")) == runs[0]
    assert find_target("sweep-eps", sweep.parent) == sweep
    inside = read_sweep(sweep).arms[1].runs[2].run
    assert inside is not None
    assert find_target(inside, sweep.parent) == sweep / "runs" / inside
    with pytest.raises(RunNotFound, match="matches 6 runs"):
        find_target("opinion", sweep.parent)
    with pytest.raises(RunNotFound, match="no run or sweep 'nope'"):
        find_target("nope", sweep.parent)


# --- the command, the PNG and the page -------------------------------------------------

def test_compare_two_runs_to_a_png(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "runs.png"
    proc = agentplex("runs", "compare", str(runs[0]), runs[1].name, "--runs-dir",
                     str(runs[1].parent), "--metric", "mean", "--metric", "spread",
                     "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and runs[1].name in proc.stdout
    assert png_size(out) == (900, 600)  # 900 wide, 300 high per metric
    image = imread(out)
    assert image.shape[:2] == (600, 900)
    for top in (0, 300):  # each chart's plot area holds both runs' lines
        area = image[top + 15:top + 265, 70:890]
        assert near(area, BLUE) > 200 and near(area, ORANGE) > 200
    # the corners are the background
    assert (image[:5, :5, :3] == 1.0).all()


def test_compare_a_sweep_and_a_run_to_a_png_with_bands(runs: list[Path], sweep: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "sweep.png"
    proc = agentplex("runs", "compare", str(sweep), str(runs[0]), "-m", "spread", "-o",
                     str(out))
    assert proc.returncode == 0, proc.stderr
    assert png_size(out) == (900, 300)
    area = imread(out)[15:265, 70:890]
    assert near(area, BLUE) > 200 and near(area, ORANGE) > 200
    assert near(area, tint(BLUE), 0.03) > 500  # the first arm's interval, a band
    assert "sweep-eps: eps=0.1" in proc.stdout  # an arm named with its sweep beside a run


@needs_chromium
def test_compare_to_html_rendered_in_chromium(runs: list[Path], sweep: Path,
                                              tmp_path: Path) -> None:
    page = tmp_path / "compare.html"
    proc = agentplex("runs", "compare", *map(str, runs), "--html", str(page))
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text
    dom = dump_dom(page)
    assert dom.count("<section>") == len(METRICS) and dom.count('class="series"') == 8
    assert "band" not in dom
    for name, rows in ((r.name, metrics(r)) for r in runs):
        assert dom.count(name) >= len(METRICS)
        for row in rows:
            assert f"{row['spread']:,.6g}" in dom
    assert dom.count("<tr><td>3</td>") == len(METRICS)  # one row per round and metric

    sweep_page = tmp_path / "sweep.html"
    proc = agentplex("runs", "compare", str(sweep), "--metric", "spread", "--html",
                     str(sweep_page))
    assert proc.returncode == 0, proc.stderr
    dom = dump_dom(sweep_page)
    assert dom.count('class="series"') == 2 and dom.count('class="band"') == 2
    assert "95 % interval" in dom and "n=3" in dom
    summary = [r for r in sweep_summary(sweep) if r.metric == "spread"]
    for line in summary:
        assert f"{line.mean:,.6g} [{line.ci_low:,.6g}, {line.ci_high:,.6g}] n=3" in dom
    # what Chromium drew: both arms' lines and their bands
    shot = imread(screenshot(sweep_page, tmp_path / "shot.png"))
    assert near(shot, BLUE) > 300 and near(shot, ORANGE) > 300
    assert near(shot, tint(BLUE), 0.03) > 300 and near(shot, tint(ORANGE), 0.03) > 300


def test_unknown_metric_is_a_clear_error_on_the_command_line(runs: list[Path],
                                                            tmp_path: Path) -> None:
    proc = agentplex("runs", "compare", str(runs[0]), "--metric", "nope", "-o",
                     str(tmp_path / "x.png"))
    assert proc.returncode == 2 and not (tmp_path / "x.png").exists()
    assert "no metric 'nope'" in proc.stderr
    assert "mean, spread, clusters, answered" in " ".join(proc.stderr.split())
    proc = agentplex("runs", "compare", "nothing-here", "--runs-dir", str(runs[0].parent))
    assert proc.returncode == 2 and "no run or sweep 'nothing-here'" in proc.stderr


def test_runs_show_of_a_sweep_and_of_a_run(sweep: Path, runs: list[Path]) -> None:
    proc = agentplex("runs", "show", "sweep-eps", "--runs-dir", str(sweep.parent))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "sweep sweep-eps" in out and "eps: 0.1, 0.3" in out
    assert "eps=0.1" in out and "eps=0.3" in out and "from its finished runs" in out
    # a table per metric, in the order the runs recorded them
    assert [out.index(f"{metric} per round") for metric in METRICS] == sorted(
        out.index(f"{metric} per round") for metric in METRICS)
    row = next(r for r in sweep_summary(sweep)
               if (r.arm, r.round, r.metric) == ("eps=0.3", 4, "mean"))
    assert f"{row.mean:.6g} [{row.ci_low:.4g}, {row.ci_high:.4g}] n=3" in out
    shown = agentplex("runs", "show", str(runs[0]))
    assert shown.returncode == 0 and "metrics per round" in shown.stdout
    last = metrics(runs[0])[-1]
    assert f"{last['spread']:.6g}" in shown.stdout


def test_a_sweep_written_by_agentplex_sweep(tmp_path: Path) -> None:
    """The folder ``agentplex sweep`` writes: its summary.csv is what is drawn and shown."""
    proc = agentplex("sweep", OPINION, "--grid", "eps=0.1,0.3", "--seeds", "2", "--agents",
                     "30", "--rounds", "3", "--runs-dir", str(tmp_path), "--name", "real")
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "real"
    with (folder / "summary.csv").open(newline="") as f:
        written = [r for r in csv.DictReader(f) if r["metric"] == "spread"]
    (a, b) = compare([folder], ["spread"]).metrics["spread"]
    assert (a.label, b.label) == ("eps=0.1", "eps=0.3")
    for series in (a, b):
        rows = [r for r in written if r["arm"] == series.label]
        assert series.rounds == [int(r["round"]) for r in rows] == [1, 2, 3]
        assert series.values == [float(r["mean"]) for r in rows]
        assert series.low == [float(r["ci_low"]) for r in rows] and series.n == [2, 2, 2]
    out = tmp_path / "real.png"
    shown = agentplex("runs", "compare", "real", "--runs-dir", str(tmp_path), "-m", "spread",
                      "-o", str(out))
    assert shown.returncode == 0 and png_size(out) == (900, 300), shown.stderr
    shown = agentplex("runs", "show", "real", "--runs-dir", str(tmp_path))
    assert shown.returncode == 0 and "from its summary.csv" in shown.stdout, shown.stderr


def test_booleans_count_as_numbers_text_and_nan_do_not(tmp_path: Path) -> None:
    from agentplex.sim.lowlevel import write_table

    folder = tmp_path / "run-1"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"run_id": "run-1", "config": {}}))
    write_table(folder / "metrics.parquet",
                [{"round": 1, "ok": True, "note": "a", "x": math.nan},
                 {"round": 2, "ok": False, "note": "b", "x": 1.5}], ["round"])
    comparison = compare([folder])
    assert list(comparison.metrics) == ["ok", "x"]  # as a sweep's summary counts them
    assert comparison.metrics["ok"][0].values == [1.0, 0.0]
    assert comparison.metrics["x"][0].rounds == [2]
    with pytest.raises(UnknownMetric, match="the known metrics: ok, x"):
        compare([folder], ["note"])
