"""``agentplex run`` as a user types it: the rounds as they go, the run folder, what
``runs list`` and ``runs show`` say of it, and clear refusals of bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TALLY = str(Path(__file__).parents[1] / "support" / "sim_scenario.py") + ":Tally"


def agentplex(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentplex", *args], capture_output=True,
                          text=True, timeout=180, env={**os.environ, "COLUMNS": "300"})


def test_run_prints_each_rounds_metrics_and_runs_show_them_again(tmp_path: Path) -> None:
    runs = str(tmp_path)
    done = agentplex("run", TALLY, "--agents", "3", "--rounds", "2", "--set", "scale=2",
                     "--runs-dir", runs)
    assert done.returncode == 0, done.stderr
    assert "round 1: total=" in done.stdout and "round 2: total=" in done.stdout
    listed = agentplex("runs", "list", "--runs-dir", runs)
    assert "completed" in listed.stdout and "tally" in listed.stdout
    shown = agentplex("runs", "show", "latest", "--runs-dir", runs)
    assert "metrics per round" in shown.stdout and "metrics.parquet" in shown.stdout
    assert '"status": "completed"' in shown.stdout


def test_bad_input_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    runs = ["--runs-dir", str(tmp_path)]
    cases = [
        (["run", *runs], "give a SCENARIO"),
        (["run", TALLY, "--nodes", "2", "--address", "tcp://127.0.0.1:1", *runs],
         "give one"),
        (["run", TALLY, "--set", "scale=lots", *runs], "bad parameters"),
        (["run", "nowhere.py:Tally", *runs], "no scenario file"),
        (["run", TALLY, "--survey", "2:everyone:q", *runs], "a target is"),
        (["run", "--resume", "nothing-here", *runs], "no run"),
        (["run", "--resume", "nothing-here", "--set", "scale=2", *runs], "--fork"),
        (["run", "--resume", "nothing-here", "--survey", "2:all:q", *runs], "--fork"),
        (["run", "--fork", "nothing-here", *runs], "RUN@ROUND"),
    ]
    for args, message in cases:
        got = agentplex(*args)
        assert got.returncode != 0, args
        assert message in got.stdout + got.stderr, (args, got.stdout + got.stderr)
    assert not any(tmp_path.iterdir())  # nothing was started


def test_a_run_that_reaches_its_budget_stops_cleanly_after_that_round(tmp_path: Path) -> None:
    """The guessing game on its scripted model with a budget of 1 token: round 1 spends
    it, the run stops there (status ``budget`` and the reason in the manifest, the round's
    metrics and checkpoint written, no closing discussion) and says so; exit code 0."""
    import json

    import pyarrow.parquet as pq

    runs = ["--runs-dir", str(tmp_path)]
    got = agentplex("run", "agentplex.sim.scenarios.guessing:Guessing", "--agents", "4",
                    "--rounds", "3", "--max-tokens", "1", "--checkpoint-every", "2", *runs)
    assert got.returncode == 0, got.stderr
    assert "stopped by the budget" in got.stdout and "round 2:" not in got.stdout
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "budget"
    assert "tokens used, the budget is 1" in manifest["reason"]
    assert manifest["config"]["max_tokens"] == 1
    assert [r["round"] for r in manifest["totals"]["by_round"]] == [1]  # no discussion
    assert [r["round"] for r in pq.read_table(run / "metrics.parquet").to_pylist()] == [1]
    assert (run / "checkpoints" / "round-00001" / "sim.json").exists()
    assert (run / "transcript.jsonl").exists() and (run / "recording.jsonl").exists()
    assert "budget" in agentplex("runs", "list", *runs).stdout
    unlimited = agentplex("run", "agentplex.sim.scenarios.guessing:Guessing", "--agents",
                          "4", "--rounds", "3", "--max-tokens", "100000", *runs)
    assert unlimited.returncode == 0 and "round 3:" in unlimited.stdout, unlimited.stderr
    assert "stopped by the budget" not in unlimited.stdout


def test_a_recording_past_its_limit_is_dropped_and_the_output_says_so(tmp_path: Path) -> None:
    import json

    game = ["run", "agentplex.sim.scenarios.guessing:Guessing", "--agents", "200",
            "--rounds", "2", "--runs-dir"]
    small = agentplex(*game, str(tmp_path / "small"), "--recording-limit", "0.01")
    assert small.returncode == 0, small.stderr
    assert "recording of the model answers passed 0.01 MB in round 1 and was dropped" in \
        small.stdout, small.stdout
    (run,) = (tmp_path / "small").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["recording"] is False and "--recording-limit 0" in \
        manifest["recording_dropped"]
    assert not (run / "recording.jsonl").exists()
    whole = agentplex(*game, str(tmp_path / "whole"))  # the default keeps a small one
    assert whole.returncode == 0 and "dropped" not in whole.stdout, whole.stderr
    (run,) = (tmp_path / "whole").iterdir()
    assert len((run / "recording.jsonl").read_text().splitlines()) == 400
