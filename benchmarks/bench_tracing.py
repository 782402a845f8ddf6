"""Cost of tracing on the in-process call path.

Runs the same workload — sequential ``await agent(msg)`` calls, each reply calling a
scripted model (two spans per call: ``invoke_agent`` and ``chat``) — in fresh processes:
with no tracer configured (``off``), with every span written to the local JSON-lines file
(``file``), and inside a full experiment that also keeps the transcript and records every
model response (``experiment``). Rates are per second of the process's CPU time (the
exporter's thread included), best of ``--repeat``. Prints one JSON line per figure.

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

from _benchlib import emit
from agentplex import AgentBase, Msg, Runtime, ScriptedChatModel
from agentplex.model import collect
from agentplex.tracing import configure_tracing, dispatcher, experiment, is_enabled

MODES = {"off": "no tracer", "file": "spans to file", "experiment": "experiment: spans, "
         "transcript, recording"}


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
        start = time.process_time()
        for _ in range(calls):
            await agent(msg)
        if is_enabled():
            dispatcher().force_flush()  # the exporter's work counts too
        return (time.process_time() - start) / calls


async def measure(mode: str, calls: int) -> float:
    if mode == "off":
        assert not is_enabled()
        return await workload(calls)
    with tempfile.TemporaryDirectory() as runs:
        if mode == "file":
            configure_tracing(file=f"{runs}/spans.jsonl", from_env=False)
            return await workload(calls)
        async with experiment("bench", runs_dir=runs):
            return await workload(calls)


def child(mode: str, calls: int) -> None:
    print(json.dumps({"seconds_per_call": asyncio.run(measure(mode, calls))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=MODES)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls)
        return
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--calls",
                                  str(args.calls)], capture_output=True, text=True, check=True)
            value = json.loads(out.stdout)["seconds_per_call"]
            best[mode] = min(best.get(mode, value), value)
    for mode, value in best.items():
        emit("agent_call_with_model", f"agentplex ({MODES[mode]})", args.calls, 1 / value,
             "calls/s (CPU)", us_per_call=round(value * 1e6, 1))
    for mode in ("file", "experiment"):
        emit("tracing_overhead", f"agentplex ({MODES[mode]})", args.calls,
             100 * (best[mode] / best["off"] - 1), "% more CPU per call than no tracer")


if __name__ == "__main__":
    main()
