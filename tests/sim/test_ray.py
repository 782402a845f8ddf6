"""The same scenario on the Ray backend: unchanged, and with the metrics it gives in one
process and on two node processes. One local Ray for the module (its start is the cost)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agentplex.sim import RunOptions, run_scenario
from agentplex.sim.lowlevel import fork_options
from tests.support import ROOT, pythonpath

ray = pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra")

OPINION = "agentplex.sim.scenarios.opinion:Opinion"
SUPPORT = Path(__file__).parents[1] / "support"
TALLY = str(SUPPORT / "sim_scenario.py") + ":Tally"
pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray, 2 CPUs, no dashboard. A Ray started before the run is used as it is,
    so its workers are told where the tests' code and the scenario file's folder are."""
    path = os.pathsep.join([pythonpath(), str(SUPPORT)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
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
