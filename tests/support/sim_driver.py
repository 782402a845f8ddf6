"""The program of a guessing game played by players in node processes, as one experiment.

    python -m tests.support.sim_driver RUNS_DIR REPLAY_DIR|"" AGENTS NODES ROUNDS

Starts ``NODES`` node processes (:mod:`tests.support.sim_node`) hosting ``AGENTS`` players
between them, asks every player each round and tells them the mean next round. Prints the
run folder, then a JSON line of timings.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

from agentplex import Msg, connect
from agentplex.tracing import experiment
from agentplex.tracing.lowlevel import transcribe
from tests.support.sim_node import HEARTBEAT_TIMEOUT, player_name


async def play(runs: str, replay: str, agents: int, nodes: int, rounds: int) -> None:
    share = agents // nodes
    timings: dict[str, float] = {}
    async with experiment("guess", runs_dir=runs, replay=replay or None,
                          config={"agents": agents, "nodes": nodes, "rounds": rounds}) as run, \
            connect(heartbeat_timeout=HEARTBEAT_TIMEOUT) as rt:
        head = rt.transport.endpoint  # type: ignore[attr-defined]
        started = time.perf_counter()
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.sim_node", head, f"node-{k}", str(k * share),
            str(share), stdout=asyncio.subprocess.PIPE) for k in range(nodes)]
        try:
            for proc in procs:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 300)
                assert line.strip() == b"ready", line
            timings["start_s"] = time.perf_counter() - started
            text = "guess a number from 0 to 100"
            for r in range(rounds):
                began = time.perf_counter()
                question = Msg("host", f"round {r}: {text}", "user")
                transcribe(question, None)
                replies = await asyncio.gather(*(
                    rt.ref(player_name(i)).call(question, timeout=300)
                    for i in range(share * nodes)))
                mean = sum(int(m.get_text_content() or 0) for m in replies) / len(replies)
                text = f"the mean was {mean:.2f}; guess again"
                timings[f"round_{r}_s"] = time.perf_counter() - began
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                await asyncio.wait_for(proc.wait(), 60)
    print(run.dir, flush=True)
    print(json.dumps({k: round(v, 3) for k, v in timings.items()}), flush=True)


if __name__ == "__main__":
    asyncio.run(play(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])))
