"""CodeAgent sandbox costs: starting a worker, running a step, a tool call from the code.

Baselines in the same run: ``exec`` of the same code in this process, and calling the
tool function directly. Rates are per second of this process's CPU time (``wall`` holds
the wall-clock rate, which includes the worker's own time).

    python benchmarks/bench_sandbox.py [--steps 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from _benchlib import emit
from agentplex.agent import PythonSandbox

STEP = "total = sum(i * i for i in range(100))"


async def add(name: str, args: list[Any], kwargs: dict[str, Any]) -> int:
    return int(args[0]) + int(args[1])


async def timed(n: int, run: Any) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await run()
    return n / max(time.process_time() - cpu, 1e-9), n / (time.perf_counter() - wall)


async def main(steps: int) -> None:
    box = PythonSandbox(timeout=60)
    cpu, wall = time.process_time(), time.perf_counter()
    await box.start(["add"])
    emit("sandbox_start", "agentplex-sandbox", 1, time.perf_counter() - wall, "s",
         cpu=round(time.process_time() - cpu, 4), isolation=box.isolation)
    namespace: dict[str, Any] = {}

    async def baseline() -> None:
        exec(STEP, namespace)

    async def sandboxed() -> None:
        result = await box.run(STEP, add, ["add"])
        assert result.error is None, result.error

    for impl, run in (("exec-in-process", baseline), ("agentplex-sandbox", sandboxed)):
        rate, wall_rate = await timed(steps, run)
        emit("code_step", impl, steps, rate, "steps/s", wall=round(wall_rate, 1))

    async def direct() -> None:
        await add("add", [1, 2], {})

    async def from_code() -> None:
        result = await box.run("for _ in range(10):\n    add(1, 2)", add, ["add"])
        assert result.error is None, result.error

    rate, wall_rate = await timed(steps, direct)
    emit("tool_call", "direct-await", steps, rate, "calls/s", wall=round(wall_rate, 1))
    rate, wall_rate = await timed(max(steps // 10, 1), from_code)
    emit("tool_call", "agentplex-sandbox", steps, rate * 10, "calls/s",
         wall=round(wall_rate * 10, 1))
    await box.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    asyncio.run(main(parser.parse_args().steps))
