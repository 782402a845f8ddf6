"""A node process killed (``kill -9``) in the middle of a run's round: under the default
``--restart on-failure`` the run goes on with the node's agents started again on the node
left, restored to the latest checkpoint, and says which agents went back to which round;
under ``--restart never`` it ends, failed, and names the lost agents."""

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

from tests.sim.test_nodes import TALLY, agentplex

RUN = [TALLY, "--agents", "8", "--rounds", "4", "--seed", "5", "--nodes", "2",
       "--checkpoint-every", "1"]
COMMON = [*RUN, "--lost-after", "5"]
HOLD = ["--set", "hold=3", "--set", "hold_at=3"]  # round 3's answers take 3 s


def run_and_kill_a_node(runs: Path, *extra: str, common: list[str] = COMMON
                        ) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``agentplex run`` whose node-1 is killed once round 2's checkpoint is written (in
    round 3, while its agents hold their answers); its output and run folder."""
    out = runs.parent / f"{runs.name}.out"
    runs.mkdir()
    with out.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "agentplex", "run", *common, *HOLD,
                                 *extra, "--runs-dir", str(runs)], stdout=sink,
                                stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "300"})
    try:
        deadline = time.monotonic() + 180
        while not list(runs.glob("*/checkpoints/round-00002/sim.json")):
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        found = re.search(r"\(pids ([\d, ]+)\)", out.read_text())
        assert found is not None, out.read_text()
        node1 = int(found.group(1).split(", ")[2])  # the head's, node-0's, node-1's
        time.sleep(0.5)  # round 3's calls are out; node-1's agents hold their answers
        os.kill(node1, signal.SIGKILL)
        proc.wait(240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    text = out.read_text()
    return subprocess.CompletedProcess(proc.args, proc.returncode, text, text), run


def totals(run: Path, number: int) -> dict[int, int]:
    """Each agent's total in round ``number``'s checkpoint, by index."""
    path = run / "checkpoints" / f"round-{number:05d}" / "agents.jsonl"
    return {int(item["name"].rpartition("-")[2]): item["state"]["total"]
            for item in map(json.loads, path.read_text().splitlines())}


def manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "manifest.json").read_text())  # type: ignore[no-any-return]


def indexes(ranges: str) -> set[int]:
    out: set[int] = set()
    for part in ranges.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def test_a_killed_node_s_agents_come_back_from_the_last_checkpoint(tmp_path: Path) -> None:
    full = agentplex("run", *COMMON, "--runs-dir", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    (undisturbed,) = [p for p in (tmp_path / "full").iterdir() if p.is_dir()]
    got, run = run_and_kill_a_node(tmp_path / "killed")
    assert got.returncode == 0, got.stdout
    m = manifest(run)
    assert m["status"] == "completed" and m["restart"] == "on-failure"
    incidents = m["incidents"]
    [restored] = incidents["restored"]
    back = indexes(restored["indexes"])
    assert 0 < len(back) < 8  # node-1's share of the 8 agents
    assert restored == {"noticed": 3, "round": 2, "agents": len(back),
                        "indexes": restored["indexes"], "to_nodes": ["node-0"],
                        "missed": []}
    assert incidents["restarts"] == incidents["rolled_back"] == len(back)
    assert incidents["lost_agents"] == 0  # the head reported them lost; they came back
    rows = pq.read_table(run / "metrics.parquet").to_pylist()
    assert [r["answered"] for r in rows] == [8, 8, 8 - len(back), 8]
    # round 4 ran with the restored agents: each went back to its round-2 total, and
    # round 4 added what it adds in the undisturbed run; the others are as undisturbed
    r2, r3, r4 = (totals(undisturbed, n) for n in (2, 3, 4))
    want = {i: r2[i] + r4[i] - r3[i] if i in back else r4[i] for i in range(8)}
    assert totals(run, 4) == want
    said = [json.loads(line) for line in (run / "transcript.jsonl").read_text().splitlines()]
    [line] = [s for s in said if (s.get("metadata") or {}).get("incident") == "restore"]
    assert line["round"] == 3 and line["name"] == "operator"
    assert "restored to round 2's checkpoint" in line["content"]
    spans = [json.loads(s) for s in (run / "trace.jsonl").read_text().splitlines()]
    [span] = [s for s in spans if s["name"] == "restore"]
    assert span["attributes"]["agentplex.sim.round"] == 3
    assert span["attributes"]["agentplex.sim.restored_to"] == 2
    assert span["attributes"]["agentplex.sim.indexes"] == restored["indexes"]
    assert "started again after their node was lost" in got.stdout
    listed = subprocess.run([sys.executable, "-m", "agentplex", "runs", "list", "--runs-dir",
                             str(tmp_path / "killed")], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "COLUMNS": "300"}).stdout
    assert f"completed ({len(back)} restarted)" in listed, listed


def test_a_killed_node_process_is_known_dead_at_once_not_after_lost_after(
        tmp_path: Path) -> None:
    """The run started the node processes, so it sees one end: the head hears it (and,
    the node answering no ping, declares it dead and tells every bus), and round 3's calls
    to its agents fail within seconds, not after the default ``--lost-after`` of 30 s; the
    agents come back as above, and round 4 reaches all of them."""
    got, run = run_and_kill_a_node(tmp_path / "killed", common=RUN)
    assert got.returncode == 0, got.stdout
    assert "left the bus (the head dropped it" in got.stdout, got.stdout
    took = {int(n): float(t) for n, t in re.findall(r"round (\d+): .*?\((\d+\.\d+)s\)",
                                                      got.stdout)}
    assert took[3] < 15, got.stdout  # the held answers take 3 s; the bus alone: 30 s
    rows = pq.read_table(run / "metrics.parquet").to_pylist()
    back = indexes(manifest(run)["incidents"]["restored"][0]["indexes"])
    assert [r["answered"] for r in rows] == [8, 8, 8 - len(back), 8]


def test_with_restart_never_the_run_fails_and_names_the_lost_agents(tmp_path: Path) -> None:
    got, run = run_and_kill_a_node(tmp_path / "never", "--restart", "never")
    assert got.returncode == 1, got.stdout
    m = manifest(run)
    assert m["status"] == "failed" and m["restart"] == "never"
    assert "lost with their node in round 3" in m["reason"]
    lost = indexes(m["reason"].partition("(")[2].partition(")")[0])
    assert 0 < len(lost) < 8
    assert m["incidents"]["lost_agents"] == len(lost) and m["incidents"]["restarts"] == 0
    rows = pq.read_table(run / "metrics.parquet").to_pylist()
    assert [r["answered"] for r in rows] == [8, 8, 8 - len(lost)]  # no round 4
    assert "the run failed" in got.stdout


def test_a_node_killed_between_a_round_s_calls_and_its_checkpoint(tmp_path: Path) -> None:
    """Node-1 dies after round 2's calls were answered: the checkpoint finds its agents
    gone, they start again from round 1's checkpoint, and round 2's checkpoint is
    written with them; the run completes."""
    gate = tmp_path / "gate"
    gate.mkdir()
    runs = tmp_path / "runs"
    out = tmp_path / "out.txt"
    with out.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "agentplex", "run", *COMMON,
                                 "--set", "hold_at=2", "--set", f"gate={gate}",
                                 "--runs-dir", str(runs)], stdout=sink,
                                stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "300"})
    try:
        deadline = time.monotonic() + 180
        while not (gate / "called").exists():
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        found = re.search(r"\(pids ([\d, ]+)\)", out.read_text())
        assert found is not None, out.read_text()
        os.kill(int(found.group(1).split(", ")[2]), signal.SIGKILL)
        (gate / "go").touch()
        proc.wait(240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 0, out.read_text()
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    m = manifest(run)
    [restored] = m["incidents"]["restored"]
    assert (restored["noticed"], restored["round"]) == (2, 1)
    rows = pq.read_table(run / "metrics.parquet").to_pylist()
    assert [r["answered"] for r in rows] == [8, 8, 8, 8]  # no call failed
    back = indexes(restored["indexes"])
    r1, r2 = totals(run, 1), totals(run, 2)
    assert all(r2[i] == r1[i] for i in back) and len(back) == m["incidents"]["rolled_back"]
