"""Cost of tracing on the in-process call path.

Runs the same workload — sequential ``await agent(msg)`` calls, each reply calling a
scripted model — in fresh processes: with no tracer configured, and inside an experiment
that traces every span to the local JSON-lines file. Prints one JSON line per figure and the
overhead ratio.

    python benchmarks/bench_tracing.py [--calls 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time

from agentplex import AgentBase, Msg, Runtime, ScriptedChatModel
from agentplex.model import collect
from agentplex.tracing import experiment, is_enabled


class Echo(AgentBase):
    def __init__(self) -> None:
        super().__init__("echo")
        self.model = ScriptedChatModel(["ok"], cycle=True)
        self.set_console_output_enabled(False)

    async def reply(self, msg: Msg | None = None) -> Msg:
        await collect(await self.model([{"role": "user", "content": "x"}]))
        return Msg("echo", "ok", "assistant")


async def workload(calls: int) -> float:
    async with Runtime():
        agent = Echo()
        msg = Msg("user", "hi", "user")
        for _ in range(200):
            await agent(msg)
        start = time.perf_counter()
        for _ in range(calls):
            await agent(msg)
        return (time.perf_counter() - start) / calls


async def measure(mode: str, calls: int) -> float:
    if mode == "off":
        assert not is_enabled()
        return await workload(calls)
    with tempfile.TemporaryDirectory() as runs:
        async with experiment("bench", runs_dir=runs):
            return await workload(calls)


def child(mode: str, calls: int) -> None:
    print(json.dumps({"seconds_per_call": asyncio.run(measure(mode, calls))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=["off", "file"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls)
        return
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for mode in ("off", "file"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--calls",
                                  str(args.calls)], capture_output=True, text=True, check=True)
            value = json.loads(out.stdout)["seconds_per_call"]
            best[mode] = min(best.get(mode, value), value)
    for mode, value in best.items():
        impl = "agentplex (no tracer)" if mode == "off" else "agentplex (trace to file)"
        print(json.dumps({"bench": "agent_call_with_model", "impl": impl, "n": args.calls,
                          "value": round(1 / value), "unit": "calls/s"}))
    overhead = best["file"] / best["off"] - 1
    print(json.dumps({"bench": "tracing_overhead", "impl": "agentplex", "n": args.calls,
                      "value": round(100 * overhead, 1), "unit": "% slower with tracing on"}))


if __name__ == "__main__":
    main()
