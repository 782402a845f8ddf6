"""CPU of one answer of a crowd player (``agentplex demo --model scripted``), in process.

``--players`` :class:`~agentplex.sim.scenarios.guessing.CrowdPlayer` on a local runtime are asked a
few rounds with one ``call_many`` each, in two fresh processes per repeat:

- ``bare``: no experiment and no tracer (the baseline: the player's own work);
- ``experiment``: inside an experiment sampling as the demo does (``1000 / players`` of
  traces): spans, the transcript, the model recording and the totals.

Each figure is the CPU time (``time.process_time``) per answer of the last round (a full
memory), best of ``--repeat``; ``answer_overhead`` is the experiment's as a multiple of
``bare``. ``--profile`` prints the experiment's top functions by CPU instead.

    python benchmarks/bench_answer.py [--players 20000] [--rounds 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import emit
from agentplex.message import Msg
from agentplex.runtime import Runtime
from agentplex.sim.scenarios.guessing import PLAYER_PREFIX, CrowdPlayer
from agentplex.tracing import experiment


async def workload(players: int, rounds: int, traced: bool, profile: bool) -> float:
    """CPU seconds per answer of the last of ``rounds`` rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            if traced:
                await stack.enter_async_context(experiment(
                    "answer", seed=0, runs_dir=tmp, sampling=min(1.0, 1000 / players)))
            rt = await stack.enter_async_context(Runtime())
            names = [f"{PLAYER_PREFIX}{i}" for i in range(players)]
            await rt.spawn_many([CrowdPlayer(seed=0) for _ in names], names)
            prof = cProfile.Profile(time.process_time) if profile else None
            took = 0.0
            for r in range(1, rounds + 1):
                ask = Msg("host", f"Round {r}: make your guess.", "user",
                          metadata={"mode": "guess"})
                last = r == rounds
                if last and prof is not None:
                    prof.enable()
                began = time.process_time()
                got = await rt.call_many(names, ask, timeout=600)
                took = time.process_time() - began
                if last and prof is not None:
                    prof.disable()
                assert all(isinstance(m, Msg) for m in got)
    if prof is not None:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
    return took / players


def child(args: argparse.Namespace) -> None:
    print(json.dumps(asyncio.run(workload(args.players, args.rounds, args.mode == "experiment",
                                          args.profile))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--players", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run (2,000 players)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.players, args.repeat = 2_000, 1
    if args.mode:
        return child(args)
    if args.profile:
        args.mode = "experiment"
        return child(args)
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for mode in ("bare", "experiment"):
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--players",
                                  str(args.players), "--rounds", str(args.rounds)],
                                 capture_output=True, text=True, check=True)
            seconds = float(out.stdout.strip().splitlines()[-1])
            best[mode] = min(best.get(mode, seconds), seconds)
    for mode, seconds in best.items():
        emit("answer_cpu", mode, args.players, seconds * 1e6, "us/answer (CPU)",
             rounds=args.rounds, sampling=min(1.0, 1000 / args.players))
    emit("answer_overhead", "experiment", args.players,
         best["experiment"] / best["bare"], "x CPU per answer vs bare")


if __name__ == "__main__":
    main()
