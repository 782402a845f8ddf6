"""A node process killed (``kill -9``) while the operator's plan runs: during a survey's
questions, and before an intervention reaches its agents. The run goes on under
``--restart on-failure``: the lost agents' answers are recorded as missing with their
error, the agents are started again and restored, and the record says what they missed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tests.sim.test_nodes import TALLY
from tests.sim.test_restart import indexes, manifest, totals

COMMON = [TALLY, "--agents", "8", "--seed", "5", "--nodes", "2", "--lost-after", "5"]


def run_and_kill_node_1(runs: Path, gate: Path, opened: int, *args: str,
                        env: dict[str, str] | None = None
                        ) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``agentplex run COMMON args`` whose node-1 is killed once ``opened`` files are in
    ``gate`` (agents or the scenario wait there for ``go``, which follows the kill)."""
    out = runs.parent / f"{runs.name}.out"
    runs.mkdir()
    with out.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "agentplex", "run", *COMMON, *args,
                                 "--runs-dir", str(runs)], stdout=sink,
                                stderr=subprocess.STDOUT,
                                env={**os.environ, "COLUMNS": "300", **(env or {})})
    try:
        deadline = time.monotonic() + 180
        while len(list(gate.iterdir())) < opened:
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        found = re.search(r"\(pids ([\d, ]+)\)", out.read_text())
        assert found is not None, out.read_text()
        os.kill(int(found.group(1).split(", ")[2]), signal.SIGKILL)  # node-1
        (gate / "go").touch()
        proc.wait(240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    text = out.read_text()
    return subprocess.CompletedProcess(proc.args, proc.returncode, text, text), run


def operator_lines(run: Path, incident: str) -> list[dict[str, Any]]:
    said = [json.loads(line) for line in (run / "transcript.jsonl").read_text().splitlines()]
    return [s for s in said if (s.get("metadata") or {}).get("incident") == incident]


def test_a_node_killed_during_a_survey_leaves_its_answers_missing(tmp_path: Path) -> None:
    """Every agent holds its answer to round 2's survey until node-1 is killed: the run
    goes on, the survey table has node-1's agents with no answer and the error they met,
    and they come back restored to round 1's checkpoint."""
    gate = tmp_path / "gate"
    gate.mkdir()
    got, run = run_and_kill_node_1(
        tmp_path / "runs", gate, 2, "--rounds", "4", "--checkpoint-every", "1",
        "--survey", "2:all:how much?", env={"TALLY_SURVEY_GATE": str(gate)})
    assert got.returncode == 0, got.stdout
    m = manifest(run)
    assert m["status"] == "completed", m
    [restored] = m["incidents"]["restored"]
    back = indexes(str(restored["indexes"]))
    assert 0 < len(back) < 8
    assert (restored["noticed"], restored["round"]) == (2, 1)
    answers = pq.read_table(run / "surveys.parquet").to_pylist()
    assert [a["agent"] for a in answers] == [f"counter-{i}" for i in range(8)]
    for i, a in enumerate(answers):
        if i in back:
            assert a["answer"] is None and a["error"], a
            assert a["error"].split(":")[0] in ("PeerLost", "ActorNotFound", "ActorStopped")
        else:
            assert a["answer"] == f"counter-{i} has {totals(run, 2)[i]}" and a["error"] is None
    rows = pq.read_table(run / "metrics.parquet").to_pylist()
    assert [r["answered"] for r in rows] == [8, 8, 8, 8]  # the survey is not the step
    assert m["errors"] == len(back)  # the lost answers; the survey left no state behind
    assert all(totals(run, 2)[i] == totals(run, 1)[i] for i in back)  # rolled back
    assert [line["round"] for line in operator_lines(run, "restore")] == [2]


def test_an_intervention_to_a_dead_node_is_recorded_as_missed(tmp_path: Path) -> None:
    """Node-1 dies in round 3 (no checkpoint then), so round 4's intervention is told to
    its dead agents: the run goes on, they are restored to round 2's checkpoint after
    round 4, and the transcript, the trace and the manifest say they missed it."""
    gate = tmp_path / "gate"
    gate.mkdir()
    got, run = run_and_kill_node_1(
        tmp_path / "runs", gate, 1, "--rounds", "5", "--checkpoint-every", "2",
        "--set", "hold_at=3", "--set", f"gate={gate}", "--intervene", "4:all:news")
    assert got.returncode == 0, got.stdout
    m = manifest(run)
    assert m["status"] == "completed", m
    [restored] = m["incidents"]["restored"]
    back = indexes(str(restored["indexes"]))
    assert 0 < len(back) < 8
    assert restored == {"noticed": 4, "round": 2, "agents": len(back),
                        "indexes": restored["indexes"], "to_nodes": ["node-0"],
                        "missed": ["intervention 1 of round 4"]}
    rows = pq.read_table(run / "metrics.parquet").to_pylist()
    assert [r["answered"] for r in rows] == [8, 8, 8, 8 - len(back), 8]
    [line] = operator_lines(run, "missed")
    assert line["round"] == 4 and line["metadata"]["indexes"] == restored["indexes"]
    assert "news" in str(line["content"])
    heard = {int(item["name"].rpartition("-")[2]): item["state"]["heard"]
             for item in map(json.loads, (run / "checkpoints" / "round-00004" /
                                          "agents.jsonl").read_text().splitlines())}
    assert all(("news" in h) == (i not in back) for i, h in heard.items()), heard
    spans = [json.loads(s) for s in (run / "trace.jsonl").read_text().splitlines()]
    [span] = [s for s in spans if s["name"] == "missed"]
    assert span["attributes"]["agentplex.sim.indexes"] == restored["indexes"]
