"""A sweep folder made of real ``agentplex run`` outputs, laid out as ``agentplex sweep``
writes one: ``sweep.json`` (arms, seeds, run ids, statuses) and the runs under ``runs/``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

OPINION = "agentplex.sim.scenarios.opinion:Opinion"


def agentplex(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``agentplex ARGS`` in a process of its own; its output as text."""
    return subprocess.run([sys.executable, "-m", "agentplex", *args], capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


def run_once(runs: Path, *args: str) -> Path:
    """One ``agentplex run`` into ``runs``: its new run folder."""
    before = set(runs.iterdir()) if runs.exists() else set()
    proc = agentplex("run", *args, "--runs-dir", str(runs))
    assert proc.returncode == 0, proc.stderr
    (new,) = set(runs.iterdir()) - before
    return new


def make_sweep(folder: Path, grid: dict[str, list[Any]], seeds: list[int], *,
               agents: int = 60, rounds: int = 4, scenario: str = OPINION) -> Path:
    """Run every arm (one value of one grid key) x seed and write ``folder/sweep.json``."""
    arms = []
    for key, values in grid.items():
        for value in values:
            runs = []
            for seed in seeds:
                run = run_once(folder / "runs", scenario, "--agents", str(agents), "--rounds",
                               str(rounds), "--seed", str(seed), "--set",
                               f"{key}={json.dumps(value)}")
                runs.append({"seed": seed, "run": run.name, "status": "completed"})
            arms.append({"name": f"{key}={value}", "params": {key: value}, "runs": runs})
    (folder / "sweep.json").write_text(json.dumps({
        "id": folder.name, "scenario": scenario, "grid": grid, "seeds": seeds,
        "agents": agents, "rounds": rounds, "arms": arms}, indent=1))
    return folder
