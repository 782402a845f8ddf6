"""The same scenario on node processes: nodes import the scenario's own file, and the
same seed gives the same metrics as in one process (checkpoints and forks included)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

TALLY = str(Path(__file__).parents[1] / "support" / "sim_scenario.py") + ":Tally"
OPINION = "agentplex.sim.scenarios.opinion:Opinion"


def agentplex(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentplex", *args], capture_output=True,
                          text=True, timeout=300, env=os.environ.copy())


def metrics(folder: Path) -> list[list[dict[str, object]]]:
    return [pq.read_table(p / "metrics.parquet").to_pylist()
            for p in sorted(folder.iterdir(), key=lambda p: p.name) if p.is_dir()]


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (an exited process nobody reaped yet, a zombie, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_two_nodes_give_the_metrics_of_one_process(tmp_path: Path) -> None:
    plan = ["--survey", "2:sample=3:how much?", "--intervene", "2:group=firsts:hi"]
    common = [TALLY, "--agents", "12", "--rounds", "4", "--seed", "8",
              "--checkpoint-every", "2", *plan]
    here = agentplex("run", *common, "--runs-dir", str(tmp_path / "here"))
    assert here.returncode == 0, here.stderr
    there = agentplex("run", *common, "--nodes", "2", "--runs-dir", str(tmp_path / "nodes"))
    assert there.returncode == 0, there.stderr
    assert "12 agents in 2 node processes" in there.stdout
    (run,) = (tmp_path / "nodes").iterdir()
    assert (run / "nodes" / "node-0.log").exists()  # the nodes' logs in the run folder
    fork = agentplex("run", "--fork", f"{run.name}@2", "--runs-dir", str(tmp_path / "nodes"))
    assert fork.returncode == 0, fork.stderr
    (here_run,) = (tmp_path / "here").iterdir()
    moved = agentplex("run", "--fork", f"{here_run.name}@2", "--nodes", "2", "--runs-dir",
                      str(tmp_path / "here"))  # a run of this process forked onto nodes
    assert moved.returncode == 0 and "in 2 node processes" in moved.stdout, moved.stderr
    one, moved_metrics = metrics(tmp_path / "here")
    assert moved_metrics == one
    first, forked = metrics(tmp_path / "nodes")
    assert one == first == forked and len(one) == 4
    assert pq.read_table(here_run / "surveys.parquet").to_pylist() == \
        pq.read_table(run / "surveys.parquet").to_pylist()
    opinion = ["run", OPINION, "--agents", "200", "--rounds", "3", "--seed", "2"]
    a = agentplex(*opinion, "--runs-dir", str(tmp_path / "op-here"))
    b = agentplex(*opinion, "--nodes", "2", "--runs-dir", str(tmp_path / "op-nodes"))
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert metrics(tmp_path / "op-here") == metrics(tmp_path / "op-nodes")


def test_a_run_on_a_running_cluster_leaves_it_as_it_found_it(tmp_path: Path) -> None:
    """``--address``: the run's agents are stopped when it ends, so the same run goes
    again on that cluster (its names would be taken otherwise), with the same metrics."""
    from tests.support.daemons import Daemons

    daemons = Daemons()
    try:
        endpoint = daemons.head()
        daemons.nodes(endpoint, ["n0", "n1"], "--allow", "agentplex.sim.scenarios.opinion")
        args = ["run", OPINION, "--agents", "50", "--rounds", "2", "--address", endpoint,
                "--checkpoint-every", "1", "--survey", "2:sample=5:and you?",
                "--runs-dir", str(tmp_path)]
        for _ in range(2):
            got = agentplex(*args)
            assert got.returncode == 0, got.stderr
            assert "50 agents in " + endpoint in got.stdout
        first, second = metrics(tmp_path)
        assert first == second and [r["answered"] for r in first] == [50, 50]
    finally:
        daemons.close()


def test_resume_on_nodes_after_the_driver_is_killed(tmp_path: Path) -> None:
    """The driver of a run on 2 nodes dies (``kill -9``) in round 3; ``--resume`` on new
    nodes gives the metrics and the transcript (the nodes' lines included) of a run on 2
    nodes that was never interrupted."""
    import json
    import re
    import signal
    import time

    common = [TALLY, "--agents", "8", "--rounds", "4", "--seed", "3", "--nodes", "2",
              "--checkpoint-every", "2"]
    full = agentplex("run", *common, "--runs-dir", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    runs = tmp_path / "killed"
    out = tmp_path / "out.txt"
    proc = subprocess.Popen([sys.executable, "-m", "agentplex", "run", *common, "--runs-dir",
                             str(runs)], stdout=out.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "TALLY_HANG_AT": "3", "COLUMNS": "300"})
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while not list(runs.glob("*/checkpoints/round-00002/sim.json")):
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        time.sleep(0.3)
        found = re.search(r"\(pids ([\d, ]+)\)", out.read_text())
        assert found is not None
        pids = [int(p) for p in found.group(1).split(", ")]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    try:  # the head and nodes the dead driver started end with it
        deadline = time.monotonic() + 60
        while (alive := [pid for pid in pids if _running(pid)]) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive, f"processes {alive} outlived the driver that started them"
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"
    resumed = agentplex("run", "--resume", run.name, "--runs-dir", str(runs))
    assert resumed.returncode == 0, resumed.stderr
    new = next(p for p in runs.iterdir() if p.is_dir() and p != run)
    (done,) = [p for p in (tmp_path / "full").iterdir() if p.is_dir()]
    assert pq.read_table(new / "metrics.parquet").to_pylist() == \
        pq.read_table(done / "metrics.parquet").to_pylist()
    assert (new / "transcript.jsonl").read_text() == (done / "transcript.jsonl").read_text()


def test_a_budget_counts_what_the_nodes_spent_in_the_round(tmp_path: Path) -> None:
    """The guessing game on 2 nodes (players and their model replicas there, nothing spent
    in the driver): the nodes' ledger entries come with the round's answers, so a budget
    of 100 tokens stops the run after round 1, with every model call of that round (and
    only those) in the manifest."""
    import json

    got = agentplex("run", "agentplex.sim.scenarios.guessing:Guessing", "--agents", "6",
                    "--rounds", "3", "--nodes", "2", "--max-tokens", "100", "--runs-dir",
                    str(tmp_path))
    assert got.returncode == 0, got.stderr
    assert "stopped by the budget" in got.stdout, got.stdout
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "budget" and "the budget is 100" in manifest["reason"]
    assert [(r["round"], r["calls"]) for r in manifest["totals"]["by_round"]] == [(1, 6)]
    assert manifest["totals"]["model_calls"] == 6


@pytest.mark.anyio
async def test_the_guessing_game_with_model_replicas_on_two_nodes(tmp_path: Path) -> None:
    """The players reach the model replicas of their own run on the nodes (the model
    actors placed by the scenario's ``start``), with the metrics of one process."""
    from agentplex.sim import RunOptions, run_scenario

    params = {"model": "scripted:thirty", "replicas": 2,
              "options": {"script": ['{"number": 30}'], "cycle": True}}
    common = {"scenario": "agentplex.sim.scenarios.guessing:Guessing", "agents": 40,
              "rounds": 2, "seed": 4, "params": params, "runs_dir": tmp_path}
    here = await run_scenario(RunOptions(**common))
    there = await run_scenario(RunOptions(**common, nodes=2))
    assert [r["answered"] for r in there.metrics] == [40, 40] and there.errors == 0
    assert there.metrics == here.metrics and here.metrics[0]["mean"] == 30


def test_the_driver_on_nodes_is_named_for_its_run_and_shown_as_driver(tmp_path: Path) -> None:
    import json

    from agentplex.tracing import summarize_run

    got = agentplex("run", TALLY, "--agents", "6", "--rounds", "2", "--nodes", "1",
                    "--sample", "1", "--runs-dir", str(tmp_path))
    assert got.returncode == 0, got.stderr
    (run,) = tmp_path.iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["driver_node"] == f"driver-{run.name}"
    nodes = summarize_run(run).nodes
    assert "driver" in nodes and nodes["driver"].sent > 0  # its send spans, under its name
    assert set(nodes) <= {"driver", "head", "node-0"}, set(nodes)
    assert nodes["node-0"].answers == 12
