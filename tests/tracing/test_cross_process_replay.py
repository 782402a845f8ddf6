"""An experiment whose agents live in node processes: their messages, model calls and
responses come back into the run folder, and replaying the run with fresh node processes
gives a byte-identical transcript."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import ROOT

AGENTS, NODES, ROUNDS = 200, 2, 3

DRIVER = textwrap.dedent('''
    import asyncio, json, signal, subprocess, sys
    from agentplex import Msg, connect
    from agentplex.tracing import experiment, transcribe
    from tests.support.sim_node import player_name

    async def play(runs, replay, agents, nodes, rounds):
        share = agents // nodes
        async with experiment("guess", runs_dir=runs, replay=replay or None) as run, \\
                connect() as rt:
            head = rt.transport.endpoint
            procs = [subprocess.Popen([sys.executable, "-m", "tests.support.sim_node", head,
                                       f"node-{k}", str(k * share), str(share)],
                                      stdout=subprocess.PIPE, text=True)
                     for k in range(nodes)]
            try:
                for proc in procs:
                    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
                    assert line.strip() == "ready", line
                text = "guess a number from 0 to 100"
                for r in range(rounds):
                    question = Msg("host", f"round {r}: {text}", "user")
                    transcribe(question, None)
                    replies = await asyncio.gather(*(
                        rt.ref(player_name(i)).call(question, timeout=60)
                        for i in range(share * nodes)))
                    mean = sum(int(m.get_text_content()) for m in replies) / len(replies)
                    text = f"the mean was {mean:.2f}; guess again"
            finally:
                for proc in procs:
                    proc.send_signal(signal.SIGTERM)
                for proc in procs:
                    await asyncio.to_thread(proc.wait, 30)
        print(run.dir, flush=True)

    asyncio.run(play(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])))
''')


def play(runs: Path, replay: Path | None = None) -> Path:
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(runs), str(replay or ""),
                           str(AGENTS), str(NODES), str(ROUNDS)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


def test_replay_across_node_processes_is_byte_identical(tmp_path: Path) -> None:
    original = play(tmp_path / "a")
    replayed = play(tmp_path / "b", replay=original)
    first = (original / "transcript.jsonl").read_bytes()
    assert first == (replayed / "transcript.jsonl").read_bytes()
    lines = [json.loads(line) for line in first.splitlines()]
    assert len(lines) == ROUNDS * (1 + AGENTS)  # each round: the question, every guess
    # causal order: each round's question, then its guesses (made after hearing it)
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
