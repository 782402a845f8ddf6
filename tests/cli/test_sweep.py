"""``agentplex sweep`` as a user types it: a small sweep of real child runs, its folder
(sweep.json, runs/, summary.csv) checked number for number, a restart that runs only what
did not finish, a failing arm beside a good one, a run past its timeout, bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

STEADY = str(Path(__file__).parents[1] / "support" / "sweep_scenario.py") + ":Steady"
T_975_1 = 12.7062047361747
"""The 0.975 quantile of Student's t with 1 degree of freedom (two seeds)."""


def agentplex(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentplex", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "300"})


def sweep_json(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "sweep.json").read_text())
    return data


def summary(folder: Path) -> list[dict[str, str]]:
    with (folder / "summary.csv").open() as f:
        return list(csv.DictReader(f))


def test_a_small_sweep_writes_its_folder_and_a_restart_runs_only_what_did_not_finish(
        tmp_path: Path) -> None:
    args = ["sweep", STEADY, "--grid", "offset=0,10", "--seeds", "2", "--agents", "3",
            "--rounds", "2", "--parallel", "2", "--runs-dir", str(tmp_path), "--name", "s"]
    done = agentplex(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    folder = tmp_path / "s"
    data = sweep_json(folder)
    assert {k: data[k] for k in ("id", "scenario", "grid", "seeds", "agents", "rounds")} == {
        "id": "s", "scenario": STEADY, "grid": {"offset": [0, 10]}, "seeds": [0, 1],
        "agents": 3, "rounds": 2}
    assert [a["name"] for a in data["arms"]] == ["offset=0", "offset=10"]
    assert [a["params"] for a in data["arms"]] == [{"offset": 0}, {"offset": 10}]
    ids = set()
    for arm in data["arms"]:
        assert [r["seed"] for r in arm["runs"]] == [0, 1]
        for r in arm["runs"]:
            assert r["status"] == "completed", r
            manifest = json.loads((folder / "runs" / r["run"] / "manifest.json").read_text())
            assert manifest["status"] == "completed"
            assert manifest["recording"] is False  # a sweep records only when asked
            assert manifest["config"]["seed"] == r["seed"]
            assert manifest["config"]["params"] == arm["params"]
            ids.add(r["run"])
    assert len(ids) == 4 and {p.name for p in (folder / "runs").iterdir()} == ids

    rows = summary(folder)
    assert list(rows[0]) == ["arm", "round", "metric", "mean", "ci_low", "ci_high", "n"]
    # value = seed + offset + round: seeds 0 and 1 give mean offset + round + 0.5, standard
    # error 0.5, so the interval is the mean ± t(0.975, 1) / 2; 'label' is text: left out
    values = {(r["arm"], int(r["round"])): r for r in rows if r["metric"] == "value"}
    assert set(values) == {(a, n) for a in ("offset=0", "offset=10") for n in (1, 2)}
    for (arm, number), r in values.items():
        mean = float(arm.split("=")[1]) + number + 0.5
        assert float(r["mean"]) == pytest.approx(mean)
        assert float(r["ci_low"]) == pytest.approx(mean - T_975_1 / 2, rel=1e-9)
        assert float(r["ci_high"]) == pytest.approx(mean + T_975_1 / 2, rel=1e-9)
        assert r["n"] == "2"
    answered = [r for r in rows if r["metric"] == "answered"]
    assert len(answered) == 4 and all(float(r["mean"]) == 3.0 and r["ci_low"] == "3.0"
                                      for r in answered)
    assert {r["metric"] for r in rows} == {"value", "answered"}
    assert "offset=10" in done.stdout and "12.5 [" in done.stdout  # the table, last round

    # started again: nothing runs, no run folder is touched
    stamps = {run: (folder / "runs" / run / "manifest.json").stat().st_mtime_ns for run in ids}
    again = agentplex(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already completed") == 4
    assert {p.name for p in (folder / "runs").iterdir()} == ids
    assert stamps == {run: (folder / "runs" / run / "manifest.json").stat().st_mtime_ns
                      for run in ids}
    assert sweep_json(folder)["arms"] == data["arms"]

    # one run did not finish (its driver was interrupted): only it runs again
    lost = data["arms"][1]["runs"][0]["run"]
    path = folder / "runs" / lost / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": "interrupted"}))
    third = agentplex(*args)
    assert third.returncode == 0, third.stdout + third.stderr
    assert third.stdout.count("already completed") == 3
    after = sweep_json(folder)
    fresh = after["arms"][1]["runs"][0]
    assert fresh["status"] == "completed" and fresh["run"] not in ids
    assert {r["run"] for a in after["arms"] for r in a["runs"]} == ids - {lost} | {fresh["run"]}
    assert {p.name for p in (folder / "runs").iterdir()} == ids | {fresh["run"]}  # kept
    assert {run: (folder / "runs" / run / "manifest.json").stat().st_mtime_ns
            for run in ids - {lost}} == {k: v for k, v in stamps.items() if k != lost}
    assert summary(folder) == rows  # the same seeds: the same numbers

    # the sweep was killed while a run went on to finish: its folder is found and kept
    record = sweep_json(folder)
    kept = record["arms"][0]["runs"][1]["run"]
    record["arms"][0]["runs"][1].update(run=None, status="running")
    (folder / "sweep.json").write_text(json.dumps(record))
    fourth = agentplex(*args)
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    assert fourth.stdout.count("already completed") == 4
    assert sweep_json(folder)["arms"][0]["runs"][1]["run"] == kept
    assert {p.name for p in (folder / "runs").iterdir()} == ids | {fresh["run"]}


def test_a_failing_arm_is_reported_and_the_others_finish(tmp_path: Path) -> None:
    done = agentplex("sweep", STEADY, "--grid", "crash=false,true", "--seeds", "2",
                     "--agents", "2", "--rounds", "1", "--parallel", "2",
                     "--runs-dir", str(tmp_path), "--name", "f")
    assert done.returncode == 1, done.stdout + done.stderr
    folder = tmp_path / "f"
    good, bad = sweep_json(folder)["arms"]
    assert [r["status"] for r in good["runs"]] == ["completed", "completed"]
    assert [r["status"] for r in bad["runs"]] == ["failed", "failed"]
    for r in bad["runs"]:
        assert "asked to crash" in r["error"]
        manifest = json.loads((folder / "runs" / r["run"] / "manifest.json").read_text())
        assert manifest["status"] == "failed"
    assert sweep_json(folder)["status"] == "failed"
    assert {r["arm"] for r in summary(folder)} == {"crash=false"}
    assert "crash=true seed 0: failed" in done.stdout and "asked to crash" in done.stdout
    assert "2 of 4 runs did not finish" in done.stdout


def test_ctrl_c_stops_the_running_runs_and_keeps_the_record(tmp_path: Path) -> None:
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "agentplex", "sweep", STEADY, "--set", "sleep=600",
         "--grid", "offset=1,2", "--seeds", "1", "--agents", "2", "--rounds", "1",
         "--parallel", "2", "--runs-dir", str(tmp_path), "--name", "c"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        runs = tmp_path / "c" / "runs"
        deadline = time.monotonic() + 120
        while len(list(runs.glob("*/manifest.json"))) < 2:  # both runs are under way
            assert time.monotonic() < deadline and proc.poll() is None, "no runs started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "interrupted" in err, out + err
    record = sweep_json(tmp_path / "c")
    assert record["status"] == "interrupted"
    for arm in record["arms"]:
        (entry,) = arm["runs"]
        assert entry["status"] == "interrupted" and entry["run"], entry
        manifest = json.loads((runs / entry["run"] / "manifest.json").read_text())
        assert manifest["status"] == "interrupted"


def test_a_run_past_its_timeout_is_stopped_and_reported(tmp_path: Path) -> None:
    done = agentplex("sweep", STEADY, "--set", "sleep=600", "--seeds", "1", "--agents", "2",
                     "--rounds", "1", "--run-timeout", "3", "--runs-dir", str(tmp_path),
                     "--name", "t", timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    (entry,) = sweep_json(tmp_path / "t")["arms"][0]["runs"]
    assert entry["status"] == "timeout" and "--run-timeout" in entry["error"]
    if entry["run"] is not None:  # it got as far as its run folder: SIGTERM ended it cleanly
        manifest = json.loads((tmp_path / "t" / "runs" / entry["run"] / "manifest.json")
                              .read_text())
        assert manifest["status"] == "interrupted"


def test_bad_input_is_refused_before_anything_runs(tmp_path: Path) -> None:
    runs = ["--runs-dir", str(tmp_path)]
    cases = [
        (["sweep", STEADY, "--grid", "offset", "--seeds", "2", *runs], "key=v1,v2"),
        (["sweep", STEADY, "--grid", "offset=1,,2", "--seeds", "2", *runs], "key=v1,v2"),
        (["sweep", STEADY, "--grid", "offset=1,1", "--seeds", "2", *runs], "repeats"),
        (["sweep", STEADY, "--seeds", "0", *runs], "--seeds takes"),
        (["sweep", STEADY, "--seeds", "two", *runs], "--seeds takes"),
        (["sweep", STEADY, "--seeds", "1,1", *runs], "--seeds takes"),
        (["sweep", STEADY, "--grid", "ofset=1,2", "--seeds", "2", *runs], "no parameter"),
        (["sweep", STEADY, "--grid", "offset=1,2", "--set", "offset=3", "--seeds", "2",
          *runs], "give it once"),
        (["sweep", STEADY, "--seeds", "2", "--nodes", "2", "--address", "tcp://127.0.0.1:1",
          *runs], "give one"),
        (["sweep", STEADY, "--seeds", "2", "--name", "../up", *runs], "--name takes"),
        (["sweep", "nowhere.py:Steady", "--seeds", "2", *runs], "no scenario file"),
    ]
    for args, message in cases:
        got = agentplex(*args)
        assert got.returncode != 0, args
        assert message in got.stdout + got.stderr, (args, got.stdout + got.stderr)
    assert not any(tmp_path.iterdir())  # nothing was started

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "sweep.json").write_text(json.dumps({
        "id": "s", "scenario": STEADY, "grid": {"offset": [0]}, "seeds": [0], "agents": 2,
        "rounds": 1, "params": {}, "arms": []}))
    got = agentplex("sweep", STEADY, "--grid", "offset=5", "--seeds", "1", "--agents", "2",
                    "--rounds", "1", "--name", "s", *runs)
    assert got.returncode != 0 and "another definition" in got.stdout + got.stderr
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["sweep.json"]


def test_a_sweep_across_two_node_processes(tmp_path: Path) -> None:
    """Each run starts its own 2 node processes (``--nodes`` passes through); the metric
    does not depend on where the agents ran."""
    done = agentplex("sweep", STEADY, "--grid", "offset=1", "--seeds", "1", "--agents", "4",
                     "--rounds", "1", "--nodes", "2", "--runs-dir", str(tmp_path),
                     "--name", "n", timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    (entry,) = sweep_json(tmp_path / "n")["arms"][0]["runs"]
    manifest = json.loads((tmp_path / "n" / "runs" / entry["run"] / "manifest.json")
                          .read_text())
    assert manifest["config"]["nodes"] == 2 and manifest["status"] == "completed"
    rows = {r["metric"]: r for r in summary(tmp_path / "n")}
    assert float(rows["value"]["mean"]) == 2.0 and float(rows["answered"]["mean"]) == 4.0
    assert rows["value"]["ci_low"] == "" and rows["value"]["n"] == "1"
