"""Record, then replay, a guessing game whose players live in node processes.

The game (``tests/support/sim_driver.py``): ``--agents`` players spread over ``--nodes``
node processes, each asked every round by the head (one experiment, model answers drawn at
random in the nodes); the replay runs fresh node processes that answer from the
recording. Prints the time of each run and of its rounds (wall clock), and whether the two
transcripts are byte-identical.

    python benchmarks/bench_replay.py [--agents 10000] [--nodes 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import emit

ROOT = Path(__file__).resolve().parents[1]


def play(runs: Path, replay: Path | None, agents: int, nodes: int, rounds: int
         ) -> tuple[Path, dict[str, float], float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "tests.support.sim_driver", str(runs),
                          str(replay or ""), str(agents), str(nodes), str(rounds)],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise SystemExit(f"the game failed:\n{out.stderr[-3000:]}")
    took = time.perf_counter() - started
    folder, timings = out.stdout.strip().splitlines()[-2:]
    return Path(folder), json.loads(timings), took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run (200 agents, 2 nodes)")
    args = parser.parse_args()
    agents, nodes = (200, 2) if args.quick else (args.agents, args.nodes)
    with tempfile.TemporaryDirectory() as tmp:
        original, recorded, took = play(Path(tmp) / "a", None, agents, nodes, args.rounds)
        emit("cross_node_run", "agentplex (record)", agents, took, "s", nodes=nodes,
             rounds=args.rounds, **recorded)
        replayed, again, took = play(Path(tmp) / "b", original, agents, nodes, args.rounds)
        emit("cross_node_run", "agentplex (replay)", agents, took, "s", nodes=nodes,
             rounds=args.rounds, **again)
        first = (original / "transcript.jsonl").read_bytes()
        same = first == (replayed / "transcript.jsonl").read_bytes()
        emit("cross_node_replay", "agentplex", agents, float(same),
             "1 = byte-identical transcript", nodes=nodes, messages=len(first.splitlines()),
             transcript_bytes=len(first))


if __name__ == "__main__":
    main()
