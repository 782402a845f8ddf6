"""Cost of tracing on the in-process call path.

Runs the same workload — sequential ``await agent(msg)`` calls, each reply calling a
scripted model (two spans per call: ``invoke_agent`` and ``chat``) — in fresh processes,
one per mode, the modes interleaved in every repeat:

- ``off``: no tracer configured (the baseline);
- ``file``: every span written to a local JSON-lines file;
- ``file-1%``: the same with head sampling keeping 1% of traces;
- ``experiment``: a full experiment (spans, streamed transcript, model recording, totals);
- ``experiment-1%``: the same, sampling 1% of traces (transcript, recording and totals
  stay complete).

Each figure is CPU time per call (``time.process_time``: every thread of the process,
the exporters' work included, flushed before the clock stops), best of ``--repeat``; the
``tracing_overhead`` lines give each mode as a multiple of ``off`` from the same run.

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import emit
from agentplex import AgentBase, Msg, Runtime, ScriptedChatModel
from agentplex.model import collect
from agentplex.tracing import configure_tracing, dispatcher, experiment, is_enabled

MODES = {
    "off": "no tracer",
    "file": "spans to file, all traced",
    "file-1%": "spans to file, 1% sampled",
    "experiment": "experiment, all traced",
    "experiment-1%": "experiment, 1% sampled",
}
TARGETS = {"file": 2.0, "file-1%": 1.15}


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
    sampling = 0.01 if mode.endswith("1%") else None
    with tempfile.TemporaryDirectory() as runs:
        if mode.startswith("file"):
            configure_tracing(file=f"{runs}/spans.jsonl", from_env=False, sampling=sampling)
            return await workload(calls)
        async with experiment("bench", runs_dir=runs, sampling=sampling):
            return await workload(calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--quick", action="store_true", help="a smoke run (2,000 calls, once)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"seconds_per_call": asyncio.run(measure(args.child, args.calls))}))
        return
    calls, repeat = (2000, 1) if args.quick else (args.calls, args.repeat)
    best: dict[str, float] = {}
    for _ in range(repeat):
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--calls",
                                  str(calls)], capture_output=True, text=True, check=True)
            value = json.loads(out.stdout)["seconds_per_call"]
            best[mode] = min(best.get(mode, value), value)
    for mode, value in best.items():
        emit("agent_call_with_model", f"agentplex ({MODES[mode]})", calls, 1 / value,
             "calls/s (CPU)", us_per_call=round(value * 1e6, 1))
    for mode, value in best.items():
        if mode != "off":
            emit("tracing_overhead", f"agentplex ({MODES[mode]})", calls,
                 value / best["off"], "x CPU per call of no tracer",
                 target=TARGETS.get(mode))


if __name__ == "__main__":
    main()
