"""An experiment whose agents live in node processes: their messages, model calls and
responses come back into the run folder, and replaying the run with fresh node processes
gives a byte-identical transcript."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

AGENTS, NODES, ROUNDS = 200, 2, 3


def play(runs: Path, replay: Path | None = None) -> Path:
    proc = subprocess.run([sys.executable, "-m", "tests.support.sim_driver", str(runs),
                           str(replay or ""), str(AGENTS), str(NODES), str(ROUNDS)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-2])


def test_replay_across_node_processes_is_byte_identical(tmp_path: Path) -> None:
    original = play(tmp_path / "a")
    replayed = play(tmp_path / "b", replay=original)
    first = (original / "transcript.jsonl").read_bytes()
    assert first == (replayed / "transcript.jsonl").read_bytes()
    lines = [json.loads(line) for line in first.splitlines()]
    assert len(lines) == ROUNDS * (1 + AGENTS)  # each round: the question, every guess
    # causal order: each round's question, then its guesses (made after hearing it), and
    # the next question after all of them (the answers carried their clocks back)
    questions = [i for i, m in enumerate(lines) if m["name"] == "host"]
    assert questions == [r * (1 + AGENTS) for r in range(ROUNDS)]
    assert {m["name"] for m in lines[1:1 + AGENTS]} == {f"p{i:04d}" for i in range(AGENTS)}
    for run in (original, replayed):
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["totals"]["model_calls"] == ROUNDS * AGENTS
        assert manifest["totals"]["messages"] == ROUNDS * (1 + AGENTS)
        assert manifest["models"] == [{"provider": "scripted", "model": "guesser"}]
        assert not (run / "parts").exists()  # the nodes' parts were taken in
    recording = (original / "recording.jsonl").read_text().splitlines()
    assert len(recording) == ROUNDS * AGENTS
