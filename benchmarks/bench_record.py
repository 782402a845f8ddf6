"""Cost of per-round metrics: a scenario run with ``sim.record`` against the same run without.

A scenario of N in-process agents (one ``sim.call_many`` per round, each agent answers a
number) runs R rounds through ``agentplex.sim.run_scenario``, in runs that alternate
between two modes: ``record`` (each round records five metrics computed from the answers,
which the runner writes to ``metrics.parquet``) and ``none`` (the same rounds, nothing
recorded). Figures are CPU seconds (``time.process_time``) of the whole run (placement,
rounds, the run folder), best of ``--repeat`` runs per mode, the first run a warm-up:

- ``record_round``: CPU per agent call in each mode (µs);
- ``record_overhead``: the difference per round (ms) and as a multiple of ``none``.

The cost ledger's share of a model call is measured by ``bench_costs.py``.

    python benchmarks/bench_record.py [--agents 10000] [--rounds 20] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from _benchlib import emit
from agentplex import AgentBase, Msg
from agentplex.sim import RunOptions, Scenario, Sim, run_scenario


class Counter(AgentBase):
    """Answers how many times it was asked."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.asked = 0

    async def reply(self, msg: Msg | None = None) -> Msg:
        self.asked += 1
        return Msg(self.name, str(self.asked), "assistant", metadata={"value": self.asked})


class Recorded(Scenario):
    """Asks every agent once a round; records five metrics when ``record`` is on."""

    agent = Counter

    class Params(BaseModel):
        record: bool = True

    def agent_args(self, index: int) -> dict[str, Any]:
        return {}

    async def step(self, sim: Sim) -> None:
        answers = await sim.call_many(sim.agents, Msg("host", "count", "user"))
        if self.params.record:
            values = [a.metadata["value"] for a in answers
                      if isinstance(a, Msg) and a.metadata is not None]
            sim.record(answered=len(values), mean=statistics.fmean(values),
                       low=min(values), high=max(values), spread=statistics.pstdev(values))


async def _rounds_cpu(record: bool, agents: int, rounds: int, runs_dir: Path) -> float:
    options = RunOptions(scenario="bench_record:Recorded", agents=agents, rounds=rounds,
                         params={"record": record}, runs_dir=runs_dir, sampling=0.0)
    began = time.process_time()
    await run_scenario(options)
    return time.process_time() - began


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.agents, a.rounds, a.repeat = 500, 5, 1
    load = round(os.getloadavg()[0], 1)
    best = {True: float("inf"), False: float("inf")}
    with tempfile.TemporaryDirectory(prefix="bench_record-") as tmp:
        asyncio.run(_rounds_cpu(False, a.agents, 1, Path(tmp)))  # warm-up: imports
        for _ in range(a.repeat):
            for record in (False, True):
                cpu = asyncio.run(_rounds_cpu(record, a.agents, a.rounds, Path(tmp)))
                best[record] = min(best[record], cpu)
    calls = a.agents * a.rounds
    for record, impl in ((False, "none"), (True, "record")):
        emit("record_round", impl, calls, 1e6 * best[record] / calls, "us/call (CPU)",
             agents=a.agents, rounds=a.rounds, load=load,
             note="whole run's CPU: placement, rounds, the run folder")
    extra = best[True] - best[False]
    emit("record_overhead", "record", a.rounds, 1e3 * extra / a.rounds, "ms/round (CPU)",
         x=round(best[True] / best[False], 3), load=load)


if __name__ == "__main__":
    main()
