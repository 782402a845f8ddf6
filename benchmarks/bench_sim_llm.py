"""LLM agents across node processes: the guessing game's players on the embedded model,
served by model-actor replicas on the nodes, one round; where the round's time goes.

The game runs through the scenario runner (``agentplex.sim.run_scenario``, as ``agentplex
run agentplex.sim.scenarios.guessing:Guessing --set model=transformers:default --set
replicas=R --nodes K``); after its rounds each replica says what its engine did (the
model actor's ``describe``). Figures:

- ``sim_llm_round``: seconds of the round (wall), with ``answered`` and ``tokens_out``;
- ``sim_llm_engine`` per replica: forward seconds split into prefill and decode, seconds
  choosing tokens (``select_s``), passes and the largest batch; ``busy_share`` is the
  replica's engine time over the round's wall time; what is left of the wall time is
  messaging, queueing and the players' own work (``other_s`` = wall - the busiest replica).

The baseline (same run) is the same round with every player in this process and one
model (``--baseline``), from the same figures.

    python benchmarks/bench_sim_llm.py [--agents 1000] [--nodes 2] [--replicas 2]
        [--baseline] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _benchlib import emit
from agentplex.sim import RunOptions, Sim, run_scenario
from agentplex.sim.scenarios.guessing import MODEL_PREFIX, Guessing


class MeasuredGuessing(Guessing):
    """The guessing game, asking its replicas for their engines' totals at the end."""

    async def finish(self, sim: Sim) -> None:
        await super().finish(sim)
        if self.params.model != "scripted":
            names = [f"{MODEL_PREFIX}{i}" for i in range(self.params.replicas)]
            described = await sim.runtime.call_many(names, "describe", timeout=120)
            sim.state["engines"] = [d.get("engine") if isinstance(d, dict) else None
                                    for d in described]


async def run_once(agents: int, nodes: int, replicas: int, model: str,
                   runs_dir: Path) -> tuple[float, dict[str, Any], list[Any]]:
    """One round; its wall time, its metrics and each replica's engine totals."""
    options = RunOptions(scenario="bench_sim_llm:MeasuredGuessing", agents=agents, rounds=1,
                         params={"model": model, "replicas": replicas}, nodes=nodes,
                         runs_dir=runs_dir, timeout=1200)
    began = time.perf_counter()
    result = await run_scenario(options)
    wall = result.seconds[0] if result.seconds else time.perf_counter() - began
    return wall, result.metrics[0] if result.metrics else {}, result.state.get("engines", [])


def report(impl: str, agents: int, wall: float, metrics: dict[str, Any],
           engines: list[Any], **where: Any) -> None:
    emit("sim_llm_round", impl, agents, wall, "s", answered=metrics.get("answered"),
         tokens_out=metrics.get("tokens_out"), load=round(os.getloadavg()[0], 1), **where)
    busiest = 0.0
    for i, e in enumerate(engines):
        if not e:
            continue
        busy = e["forward_s"] + e["select_s"]
        busiest = max(busiest, busy)
        emit("sim_llm_engine", f"{impl}/replica-{i}", agents, busy, "s",
             prefill_s=round(e["prefill_s"], 2), decode_s=round(e["decode_s"], 2),
             select_s=round(e["select_s"], 2), steps=e["steps"], max_rows=e["max_rows"],
             prefill_tokens=e["prefill_tokens"], busy_share=round(busy / wall, 3))
    emit("sim_llm_other", impl, agents, max(0.0, wall - busiest), "s",
         note="wall - the busiest replica: messaging, queueing, the players' own work")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--model", default="transformers:default")
    p.add_argument("--baseline", action="store_true",
                   help="also the same round in this process with one model")
    p.add_argument("--quick", action="store_true", help="40 agents")
    a = p.parse_args()
    if a.quick:
        a.agents = 40
    runs_dir = Path(tempfile.mkdtemp(prefix="bench_sim_llm-"))
    try:
        wall, metrics, engines = asyncio.run(
            run_once(a.agents, a.nodes, a.replicas, a.model, runs_dir))
        report(f"agentplex-{a.nodes}-nodes", a.agents, wall, metrics, engines,
               nodes=a.nodes, replicas=a.replicas)
        if a.baseline:
            wall, metrics, engines = asyncio.run(run_once(a.agents, 0, 1, a.model, runs_dir))
            report("agentplex-in-process", a.agents, wall, metrics, engines, replicas=1)
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
