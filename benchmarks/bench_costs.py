"""Cost of the cost ledger per model call.

The workload of ``bench_tracing.py`` (sequential ``await agent(msg)`` calls, each reply
calling a scripted model) inside one experiment, in one process, in batches that alternate
between two modes:

- ``on``: as shipped — each call adds to the ledger (model, round, agent class, tokens)
  and, the scripted model being local, takes its share of the device clock;
- ``off``: the same run with the ledger's per-call work switched off for the batch (the
  run's ``charge`` a no-op, no provider treated as local, so no device clock).

Each figure is CPU time per call (``time.process_time``), best of ``--repeat`` batches per
mode; ``ledger_overhead`` gives the difference per call and as a multiple, and
``ledger_work`` the ledger's per-call work timed alone (the difference drowns in the noise
of a shared machine; this does not). The rounds are
set (``in_round``) as a simulation runner sets them. The 1-minute load average at the start
and end is in every line (timing on a shared machine is noisy).

    python benchmarks/bench_costs.py [--calls 5000] [--repeat 7] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import emit
from agentplex import Msg, Runtime
from agentplex.model import _instrumentation
from agentplex.tracing import Run, current_round, experiment, in_round
from agentplex.tracing.lowlevel import DeviceClock, current_actor_class
from bench_tracing import Echo  # the same one-call agent


def switch(run: Run, on: bool, local: Any) -> None:
    """The ledger's per-call work on or off for the next batch (benchmark only)."""
    if on:
        run.__dict__.pop("charge", None)
        setattr(_instrumentation, "LOCAL_PROVIDERS", local)  # noqa: B010
    else:
        run.charge = lambda *args: None  # type: ignore[method-assign]
        setattr(_instrumentation, "LOCAL_PROVIDERS", frozenset())  # noqa: B010


async def measure(calls: int, repeat: int) -> dict[str, float]:
    best: dict[str, float] = {}
    local = getattr(_instrumentation, "LOCAL_PROVIDERS")  # noqa: B009
    with tempfile.TemporaryDirectory() as runs:
        async with experiment("bench-costs", runs_dir=runs, sampling=0.01) as run, Runtime():
            agent = Echo()
            msg = Msg("user", "hi", "user")
            for _ in range(500):
                await agent(msg)
            for batch in range(2 * repeat):
                mode = ("on", "off", "off", "on")[batch % 4]  # neither always first
                switch(run, mode == "on", local)
                with in_round(batch + 1):
                    start = time.process_time()
                    for _ in range(calls):
                        await agent(msg)
                    value = (time.process_time() - start) / calls
                best[mode] = min(best.get(mode, value), value)
            switch(run, True, local)
            counted = run.ledger.total().calls
    charged = repeat * calls + 500
    assert counted == charged, (counted, charged)  # the ledger batches, and only they
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a smoke run (500 calls, twice)")
    args = parser.parse_args()
    calls, repeat = (500, 2) if args.quick else (args.calls, args.repeat)
    load_before = os.getloadavg()[0]
    best = asyncio.run(measure(calls, repeat))
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    for mode, value in best.items():
        emit("model_call_in_experiment", f"agentplex (ledger {mode})", calls, value * 1e6,
             "us/call (CPU)", load_1min=load, repeat=repeat)
    emit("ledger_overhead", "agentplex", calls, (best["on"] - best["off"]) * 1e6,
         "us/call (CPU)", ratio=round(best["on"] / best["off"], 3), load_1min=load)
    work = ledger_work(20 * calls)
    emit("ledger_work", "agentplex (round, class, charge, device clock)", 20 * calls,
         work * 1e6, "us/call (CPU)", share=round(work / best["on"], 4), load_1min=load)


def ledger_work(n: int) -> float:
    """CPU per call of the ledger's own per-call work, alone: what the instrumentation does
    for it (the round, the agent class, the device clock of a local model, the charge)."""
    with tempfile.TemporaryDirectory() as runs:
        run = Run("bench", Path(runs), None, {}, None)
        clock = DeviceClock()
        with in_round(3):
            start = time.process_time()
            for _ in range(n):
                share = clock.start()
                device_s = clock.stop(share)
                cls = current_actor_class()
                run.charge("scripted", "scripted", current_round(),
                           cls.__name__ if cls is not None else None, 1, 1, 0, 0, device_s, 0.0)
            value = (time.process_time() - start) / n
        run.write()
    return value


if __name__ == "__main__":
    main()
