"""AgentScope 1.0.x peer benchmarks; prints JSON lines.

Run by the peer's own venv (see ``benchmarks/setup_peers.sh``)::

    .venvs/agentscope/bin/python benchmarks/peers/agentscope_bench.py [--quick]

AgentScope 1.0 has no runtime and no mailbox: ``await agent(msg)`` is a direct coroutine
call (with its hook machinery). Same benchmarks and sizes as ``bench_runtime.py``:
``roundtrip`` (an agent awaiting another inside its ``reply``, and a driver task awaiting
``await agent(msg)``), ``concurrent`` (many tasks calling one agent), ``broadcast``
(``MsgHub.broadcast`` to 1,000 participants; it returns once all have observed) and
``spawn`` (constructing N idle agents, each N in a fresh process).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("AGENTSCOPE_DISABLE_CONSOLE_OUTPUT", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentscope.agent import AgentBase
from agentscope.message import Msg
from agentscope.pipeline import MsgHub

from _benchlib import (
    Case,
    Sizes,
    bench_main,
    measure_spawn,
    run_cases,
)

IMPL = "agentscope"
MSG = Msg("bench", "ping", "user")


class Echo(AgentBase):
    """Replies with the message it got."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    async def reply(self, msg: Msg) -> Msg:  # type: ignore[override]
        return msg

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        return None


class Caller(Echo):
    """Calls ``target`` ``rounds`` times, one after another, inside its own reply."""

    target: AgentBase
    rounds = 0

    async def reply(self, msg: Msg) -> Msg:  # type: ignore[override]
        target = self.target
        for _ in range(self.rounds):
            await target(msg)
        return msg


class Counter(Echo):
    """Observes messages and counts them down in a shared ``state``."""

    state: dict[str, Any]

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        self.state["left"] -= 1


async def bench(sz: Sizes) -> None:
    echo, caller = Echo("echo"), Caller("caller")
    caller.target = echo

    async def agent_to_agent(n: int) -> None:
        caller.rounds = n
        await caller(MSG)

    async def driver(n: int) -> None:
        for _ in range(n):
            await echo(MSG)

    async def many_callers(n: int) -> None:
        await asyncio.gather(*(driver(n // sz.callers) for _ in range(sz.callers)))

    state: dict[str, Any] = {}
    counters = [Counter(f"counter-{i}") for i in range(sz.subscribers)]
    for agent in counters:
        agent.state = state
    async with MsgHub(counters, enable_auto_broadcast=False) as hub:

        async def broadcast(deliveries: int) -> None:
            for _ in range(max(1, deliveries // sz.subscribers)):
                state["left"] = sz.subscribers
                await hub.broadcast(MSG)
                if state["left"] != 0:
                    raise RuntimeError("MsgHub.broadcast returned before every observe")

        total = sz.callers * sz.calls_per_caller
        await run_cases([
            Case("roundtrip", f"{IMPL}-agent", sz.roundtrip, agent_to_agent, "calls/s"),
            Case("roundtrip", f"{IMPL}-driver", sz.roundtrip, driver, "calls/s"),
            Case("concurrent", IMPL, total, many_callers, "calls/s", {"callers": sz.callers}),
            Case("broadcast", f"{IMPL}-msghub", sz.subscribers, broadcast, "deliveries/s",
                 {"rounds": sz.broadcast_rounds}),
        ], sz.repeats)


async def spawn_child(n: int) -> None:
    async def spawn(count: int) -> list[Echo]:
        return [Echo(f"idle-{i}") for i in range(count)]

    await measure_spawn(IMPL, n, spawn)


async def main(argv: list[str]) -> None:
    await bench_main(argv, __file__, (IMPL,), bench, lambda _impl, n: spawn_child(n))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
