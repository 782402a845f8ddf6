"""Checkpoints, resume after a driver's ``kill -9``, and forks that share nothing."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agentplex.sim import CheckpointError, RunOptions, checkpoints, run_scenario
from agentplex.sim.lowlevel import checkpoint_at, fork_options, resume_options

TALLY = str(Path(__file__).parents[1] / "support" / "sim_scenario.py") + ":Tally"
ARGS = ["run", TALLY, "--agents", "6", "--rounds", "7", "--seed", "4",
        "--checkpoint-every", "2", "--survey", "3:sample=2:how much?",
        "--intervene", "4:group=firsts:hello", "--survey", "6:all:and now?"]


def agentplex(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentplex", *args], capture_output=True,
                          text=True, timeout=180, env={**os.environ, **(env or {})})


def only_run(folder: Path) -> Path:
    (run,) = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run


def same_run_folder(a: Path, b: Path) -> None:
    """What a resumed run must reproduce: metrics, transcript, survey answers."""
    assert pq.read_table(a / "metrics.parquet").to_pylist() == \
        pq.read_table(b / "metrics.parquet").to_pylist()
    assert (a / "transcript.jsonl").read_bytes() == (b / "transcript.jsonl").read_bytes()
    assert pq.read_table(a / "surveys.parquet").to_pylist() == \
        pq.read_table(b / "surveys.parquet").to_pylist()


def test_resume_after_kill_9_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    full = agentplex(*ARGS, "--runs-dir", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    killed_dir = tmp_path / "killed"
    # the driver stops in round 5 (after round 4's checkpoint) until it is killed
    proc = subprocess.Popen([sys.executable, "-m", "agentplex", *ARGS, "--runs-dir",
                             str(killed_dir)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "TALLY_HANG_AT": "5"})
    try:
        deadline = time.monotonic() + 120
        while not list(killed_dir.glob("*/checkpoints/round-00004/sim.json")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # into round 5
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    run = only_run(killed_dir)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "running"  # what a dead driver leaves
    assert [c.round for c in checkpoints(run)] == [2, 4]
    resumed = agentplex("run", "--resume", run.name, "--runs-dir", str(killed_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert "resume from" in resumed.stdout and "round 7:" in resumed.stdout
    new = next(p for p in killed_dir.iterdir() if p.is_dir() and p != run
               and not p.name.startswith("."))
    same_run_folder(only_run(tmp_path / "full"), new)
    again = json.loads((new / "manifest.json").read_text())
    assert again["resumed_from"] == {"run": run.name, "round": 4}
    assert again["status"] == "completed"


pytestmark = pytest.mark.anyio


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


async def test_forks_start_from_a_checkpoint_with_changed_parameters_and_share_nothing(
        tmp_path: Path) -> None:
    parent = await run_scenario(RunOptions(scenario=TALLY, agents=5, rounds=6, seed=2,
                                           checkpoint_every=2, runs_dir=tmp_path))
    saved = digest(parent.dir / "checkpoints")
    options, start = fork_options(f"{parent.run_id}@2", tmp_path, {"scale": 10}, None, None)
    changed = await run_scenario(options, start=start)
    options, start = fork_options(f"{parent.run_id}@2", tmp_path, {}, None, None)
    same = await run_scenario(options, start=start)
    # an arm with the parent's parameters goes on exactly as the parent did, although
    # another arm ran from the same checkpoint in this process before it
    assert same.metrics == parent.metrics
    assert (same.dir / "transcript.jsonl").read_bytes() == \
        (parent.dir / "transcript.jsonl").read_bytes()
    assert changed.metrics[:2] == parent.metrics[:2]
    assert changed.metrics[2]["total"] - changed.metrics[1]["total"] > \
        5 * (parent.metrics[2]["total"] - parent.metrics[1]["total"])
    assert digest(parent.dir / "checkpoints") == saved
    manifest = json.loads((changed.dir / "manifest.json").read_text())
    assert manifest["parent"] == {"run": parent.run_id, "round": 2}
    assert manifest["config"]["params"]["scale"] == 10


async def test_start_sees_the_state_a_run_continues_from(tmp_path: Path) -> None:
    """``Scenario.start`` runs on every start: fresh, before ``setup`` (nothing yet); on a
    fork or resume, after the checkpoint is restored (its state, parameters and round)."""
    seen: list[str] = []
    parent = await run_scenario(RunOptions(scenario=TALLY, agents=3, rounds=4, seed=5,
                                           checkpoint_every=2, runs_dir=tmp_path),
                                log=seen.append)
    assert "start at round 0: history None, scale 1" in seen
    history = checkpoint_at(parent.dir, 2).meta()["state"]["history"]
    assert len(history) == 2
    seen.clear()
    options, start = fork_options(f"{parent.run_id}@2", tmp_path, {"scale": 3}, None, None)
    await run_scenario(options, start=start, log=seen.append)
    assert f"start at round 2: history {history}, scale 3" in seen, seen
    seen.clear()
    options, start = resume_options(parent.run_id, tmp_path)
    await run_scenario(options, start=start, log=seen.append)
    assert any(x.startswith("start at round 4: history [") for x in seen), seen


async def test_resume_and_fork_refuse_what_they_cannot_use(tmp_path: Path) -> None:
    plain = await run_scenario(RunOptions(scenario=TALLY, agents=2, rounds=2,
                                          runs_dir=tmp_path))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        resume_options(plain.run_id, tmp_path)
    with pytest.raises(CheckpointError, match="no run"):
        resume_options("nosuchrun", tmp_path)
    with pytest.raises(CheckpointError, match="RUN@ROUND"):
        fork_options(plain.run_id, tmp_path, {}, None, None)
    saved = await run_scenario(RunOptions(scenario=TALLY, agents=2, rounds=4,
                                          checkpoint_every=2, runs_dir=tmp_path))
    with pytest.raises(CheckpointError, match="no checkpoint of round 3"):
        fork_options(f"{saved.run_id}@3", tmp_path, {}, None, None)


def test_ctrl_c_and_sigterm_leave_an_interrupted_run(tmp_path: Path) -> None:
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        runs = tmp_path / sig.name
        proc = subprocess.Popen([sys.executable, "-m", "agentplex", "run", TALLY, "--agents",
                                 "3", "--rounds", "5", "--runs-dir", str(runs)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "TALLY_HANG_AT": "2"})
        try:
            deadline = time.monotonic() + 120
            while not list(runs.glob("*/metrics.parquet")):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.3)
        finally:
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        manifest = json.loads((only_run(runs) / "manifest.json").read_text())
        assert manifest["status"] == "interrupted"
        assert pq.read_table(only_run(runs) / "metrics.parquet").num_rows == 1
