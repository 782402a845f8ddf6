"""The same scenario on the Ray backend: unchanged, and with the metrics it gives in one
process and on two node processes. One local Ray for the module (its start is the cost)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from agentplex.sim import RunOptions, RunResult, load_plan, run_scenario
from agentplex.sim.lowlevel import fork_options
from tests.support import ROOT, pythonpath

ray = pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra")

OPINION = "agentplex.sim.scenarios.opinion:Opinion"
SUPPORT = Path(__file__).parents[1] / "support"
TALLY = str(SUPPORT / "sim_scenario.py") + ":Tally"
pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def survey_gate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the Ray workers' agents wait when surveyed, once a test makes the folder."""
    return tmp_path_factory.mktemp("ray") / "survey-gate"


@pytest.fixture(scope="module")
def local_ray(survey_gate: Path) -> Iterator[None]:
    """One local Ray, 2 CPUs, no dashboard. A Ray started before the run is used as it is,
    so its workers are told where the tests' code and the scenario file's folder are (and
    the survey gate of :func:`survey_gate`)."""
    path = os.pathsep.join([pythonpath(), str(SUPPORT)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path,
                                       "TALLY_SURVEY_GATE": str(survey_gate)}})
    yield
    ray.shutdown()


def table(run_dir: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    return rows


async def test_opinion_gives_the_same_metrics_in_process_on_two_nodes_and_on_ray(
        local_ray: None, tmp_path: Path) -> None:
    common = {"scenario": OPINION, "agents": 200, "rounds": 3, "seed": 2}
    here = await run_scenario(RunOptions(**common, runs_dir=tmp_path / "here"))
    nodes = await run_scenario(RunOptions(**common, nodes=2, runs_dir=tmp_path / "nodes"))
    lines: list[str] = []
    on_ray = await run_scenario(RunOptions(**common, backend="ray", nodes=2,
                                           runs_dir=tmp_path / "ray"), log=lines.append)
    assert "Opinion: 200 agents in Ray worker processes (2)" in lines, lines
    assert len(table(here.dir)) == 3 and len(table(here.dir)[0]) > 1
    assert table(here.dir) == table(nodes.dir) == table(on_ray.dir)
    manifest = json.loads((on_ray.dir / "manifest.json").read_text())
    assert manifest["config"]["backend"] == "ray" and manifest["status"] == "completed"
    assert not ray.util.list_named_actors() and ray.is_initialized()  # workers gone, Ray kept


async def test_a_file_scenario_checkpoints_on_ray_and_forks_into_this_process(
        local_ray: None, tmp_path: Path) -> None:
    """Per-agent messages, a checkpoint of the agents' states read from the Ray workers,
    and a fork of that run here: all as in one process."""
    common = {"scenario": TALLY, "agents": 7, "rounds": 4, "seed": 3, "checkpoint_every": 2}
    here = await run_scenario(RunOptions(**common, runs_dir=tmp_path))
    on_ray = await run_scenario(RunOptions(**common, backend="ray", runs_dir=tmp_path))
    assert on_ray.metrics == here.metrics and on_ray.errors == on_ray.timeouts == 0
    options, start = fork_options(f"{on_ray.run_id}@2", tmp_path, {}, None, None)
    options.backend = "local"
    arm = await run_scenario(options, start=start)
    assert arm.metrics == here.metrics


def test_demo_on_ray_from_the_command_line(tmp_path: Path) -> None:
    """``agentplex demo --backend ray``: a local Ray of its own, started and shut down."""
    env = {**os.environ, "PYTHONPATH": pythonpath(), "COLUMNS": "400"}
    proc = subprocess.run(
        [sys.executable, "-m", "agentplex", "demo", "--backend", "ray", "--model",
         "scripted", "--agents", "30", "--rounds", "2", "--speakers", "2",
         "--runs-dir", str(tmp_path)], capture_output=True, text=True, timeout=300,
        cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "30 players in Ray worker processes" in proc.stdout
    assert "round 2: 30/30 answered" in proc.stdout
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["totals"]["model_calls"] == 2 * 30 + 2


def held_by(gate: Path) -> list[int]:
    """The processes whose agents wait at ``gate`` (their ids, sorted)."""
    return sorted(int(p.name.rpartition("-")[2]) for p in gate.iterdir() if p.name != "go")


def shut(gate: Path) -> None:
    """``gate`` made, and empty: surveyed agents wait there."""
    gate.mkdir(exist_ok=True)
    for p in gate.iterdir():
        p.unlink()


async def run_killing_a_worker(gate: Path, runs: Path, restart: str) -> RunResult:
    """8 Tally agents on 2 Ray workers, a checkpoint every round, all surveyed in round 2:
    the second worker is killed (``kill -9``) while the agents hold their answers."""
    shut(gate)
    options = RunOptions(scenario=TALLY, agents=8, rounds=4, seed=5, backend="ray", nodes=2,
                         checkpoint_every=1, restart=restart,
                         plan=load_plan(survey=["2:all:how much?"]), runs_dir=runs)
    running = asyncio.ensure_future(run_scenario(options))
    try:
        for _ in range(3600):  # both workers' agents hold their answers
            if len(held_by(gate)) >= 2 or running.done():
                break
            await asyncio.sleep(0.05)
        assert not running.done(), running.result()
        os.kill(held_by(gate)[1], signal.SIGKILL)
        os.close(os.open(gate / "go", os.O_CREAT | os.O_WRONLY))
        return await asyncio.wait_for(running, 240)
    finally:
        running.cancel()


def missing_answers(run: Path) -> list[dict[str, Any]]:
    """The survey's rows with no answer, each checked to carry the error of a worker Ray
    reported dead (its calls failed then, not after ``--lost-after``'s 30 s)."""
    answers = pq.read_table(run / "surveys.parquet").to_pylist()
    missing = [a for a in answers if a["answer"] is None]
    assert all(a["error"].startswith("PeerLost: Ray worker ") and "died" in a["error"]
               for a in missing), missing[0]
    return missing


async def test_a_killed_ray_worker_s_agents_come_back_from_the_last_checkpoint(
        local_ray: None, survey_gate: Path, tmp_path: Path) -> None:
    """A Ray worker process killed (``kill -9``) while its agents answer round 2's survey:
    under ``restart="on-failure"`` its agents start again in a new Ray worker, restored to
    round 1's checkpoint, counted and named as on node processes; their survey answers are
    missing with the error they met (as soon as Ray reports the death: ``--lost-after`` is
    left at its 30 s); the run completes."""
    result = await run_killing_a_worker(survey_gate, tmp_path, "on-failure")
    assert result.status == "completed" and result.restarts == 4, result
    m = json.loads((result.dir / "manifest.json").read_text())
    [restored] = m["incidents"]["restored"]
    assert (restored["noticed"], restored["round"], restored["agents"]) == (2, 1, 4)
    assert m["incidents"]["restarts"] == m["incidents"]["rolled_back"] == 4
    assert m["incidents"]["lost_agents"] == 0 and m["status"] == "completed"
    back = {f"counter-{i}" for part in restored["indexes"].split(",")
            for i in range(int(part.partition("-")[0]), int(part.rpartition("-")[2]) + 1)}
    assert {a["agent"] for a in missing_answers(result.dir)} == back
    assert [r["answered"] for r in table(result.dir)] == [8, 8, 8, 8]

    def totals(number: int) -> dict[str, int]:
        path = result.dir / "checkpoints" / f"round-{number:05d}" / "agents.jsonl"
        return {item["name"]: item["state"]["total"]
                for item in map(json.loads, path.read_text().splitlines())}

    assert all(totals(2)[n] == totals(1)[n] for n in back)  # rolled back to round 1
    assert not ray.util.list_named_actors() and ray.is_initialized()


async def test_with_restart_never_a_killed_ray_worker_fails_the_run(
        local_ray: None, survey_gate: Path, tmp_path: Path) -> None:
    """The same kill under ``restart="never"``: the run ends ``failed`` after round 2,
    naming the lost agents, with its survey table written."""
    result = await run_killing_a_worker(survey_gate, tmp_path, "never")
    assert result.status == "failed" and result.lost_agents == 4, result
    assert result.reason is not None and "lost with their node in round 2" in result.reason
    m = json.loads((result.dir / "manifest.json").read_text())
    assert m["status"] == "failed" and m["incidents"]["restored"] == []
    assert [x["node"].startswith("ray-worker-") for x in m["incidents"]["lost"]] == [True]
    assert len(missing_answers(result.dir)) == 4
    assert [r["answered"] for r in table(result.dir)] == [8, 8]
