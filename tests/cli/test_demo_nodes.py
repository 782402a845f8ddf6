"""The main job across node processes, as a user runs it: 2,000 players on two nodes, and
the node processes it started gone afterwards — after a success, an error or a Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import ROOT, pythonpath

PIDS = re.compile(r"\(pids ([\d, ]+)\)")


def demo(tmp_path: Path, *args: str, **env_vars: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": pythonpath(), "COLUMNS": "400", **env_vars}
    return subprocess.Popen(
        [sys.executable, "-m", "agentplex", "demo", "--runs-dir", str(tmp_path), *args],
        cwd=ROOT, env=env, stdout=(tmp_path / "out.txt").open("w"),
        stderr=(tmp_path / "err.txt").open("w"), text=True)


def started_pids(tmp_path: Path, timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = PIDS.search((tmp_path / "out.txt").read_text())
        if found:
            return [int(p) for p in found.group(1).split(", ")]
        time.sleep(0.1)
    raise AssertionError(f"no pids printed:\n{(tmp_path / 'out.txt').read_text()}"
                         f"{(tmp_path / 'err.txt').read_text()[-3000:]}")


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # exited, not yet reaped


def assert_all_gone(pids: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(gone(p) for p in pids):
        time.sleep(0.1)
    assert [p for p in pids if not gone(p)] == []


def test_demo_2000_players_on_two_nodes(tmp_path: Path) -> None:
    proc = demo(tmp_path, "--agents", "2000", "--nodes", "2", "--model", "scripted",
                "--rounds", "2", "--speakers", "5")
    assert proc.wait(600) == 0, (tmp_path / "err.txt").read_text()[-3000:]
    out = (tmp_path / "out.txt").read_text()
    assert_all_gone(started_pids(tmp_path))
    assert "placed 2,000 players" in out
    for r in (1, 2):
        assert re.search(rf"│\s+{r} │\s+2,000/2,000 │", out), out
    run = next(p for p in tmp_path.iterdir() if (p / "manifest.json").exists())
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["agents"] == 2000 and manifest["config"]["nodes"] == 2
    assert manifest["totals"]["model_calls"] == 2 * 2000 + 5
    lines = [json.loads(x) for x in (run / "transcript.jsonl").read_text().splitlines()]
    guesses = [x for x in lines if "guess" in (x.get("metadata") or {})]
    assert len(guesses) == 2 * 2000
    assert len({x["name"] for x in guesses}) == 2000
    said = [x for x in lines
            if x["name"].startswith("player-") and "guess" not in (x.get("metadata") or {})]
    assert len(said) == 5
    assert (run / "trace.jsonl").exists()
    assert sorted(p.name for p in (run / "nodes").iterdir()) == [
        "head.log", "node-0.log", "node-1.log"]


def test_demo_stops_its_nodes_on_an_error(tmp_path: Path) -> None:
    # The model is a hosted one whose server refuses every call: the nodes started, the
    # first round gets no answer, and the demo stops them before it reports the error. (A
    # model that cannot be built at all is refused here before any node starts.)
    proc = demo(tmp_path, "--agents", "10", "--nodes", "2", "--model", "openai:gpt-4o-mini",
                OPENAI_API_KEY="k", OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    assert proc.wait(300) == 1
    err = (tmp_path / "err.txt").read_text()
    assert "the demo failed" in err and "no player answered" in err, err[-3000:]
    assert_all_gone(started_pids(tmp_path, timeout=5))


def test_demo_stops_its_nodes_on_ctrl_c(tmp_path: Path) -> None:
    proc = demo(tmp_path, "--agents", "2000", "--nodes", "2", "--model", "scripted",
                "--rounds", "1000")
    pids = started_pids(tmp_path)
    deadline = time.monotonic() + 120
    while "placed 2,000 players" not in (tmp_path / "out.txt").read_text():
        assert time.monotonic() < deadline and proc.poll() is None, (
            (tmp_path / "err.txt").read_text()[-3000:])
        time.sleep(0.1)
    time.sleep(1.0)  # into the first rounds
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 130
    assert "interrupted" in (tmp_path / "err.txt").read_text()
    assert_all_gone(pids)


def test_demo_on_a_running_cluster_leaves_it_as_it_found_it(tmp_path: Path) -> None:
    """``--address``: the players (and model replicas) are stopped when the game ends, so
    the same command runs again on that cluster (its names were taken before)."""
    from tests.support.daemons import Daemons

    daemons = Daemons()
    try:
        endpoint = daemons.head()
        daemons.nodes(endpoint, ["n0"], "--allow", "agentplex.sim.scenarios._crowd")
        for attempt in ("first", "second"):
            runs = tmp_path / attempt
            runs.mkdir()
            proc = demo(runs, "--agents", "50", "--address", endpoint, "--model", "scripted",
                        "--rounds", "1", "--speakers", "1")
            assert proc.wait(300) == 0, (runs / "err.txt").read_text()[-3000:]
            assert "placed 50 players" in (runs / "out.txt").read_text()
    finally:
        daemons.close()
