"""autogen-core 0.7.5 peer benchmarks (``SingleThreadedAgentRuntime``); prints JSON lines.

Run by the peer's own venv (see ``benchmarks/setup_peers.sh``)::

    .venvs/autogen/bin/python benchmarks/peers/autogen_bench.py [--quick]

Same benchmarks and sizes as ``bench_runtime.py``: ``roundtrip`` (``send_message`` and
await the reply), ``concurrent`` (many tasks sending to one agent), ``broadcast``
(``publish_message`` to a topic with 1,000 subscribed agents, until all have handled it)
and ``spawn`` (``register_agent_instance`` of N idle agents, each N in a fresh process).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autogen_core import (
    AgentId,
    MessageContext,
    RoutedAgent,
    SingleThreadedAgentRuntime,
    TopicId,
    TypeSubscription,
    message_handler,
)

from _benchlib import (
    Case,
    Sizes,
    bench_main,
    measure_spawn,
    run_cases,
)

IMPL = "autogen-core"


@dataclass
class Ping:
    text: str


MSG = Ping("ping")


class Echo(RoutedAgent):
    """Replies with the message it got."""

    def __init__(self) -> None:
        super().__init__("echo")

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
        return message


class Counter(RoutedAgent):
    """Counts published messages; resolves ``done`` once ``left`` reaches zero (shared)."""

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__("counter")
        self.state = state

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> None:
        state = self.state
        state["left"] -= 1
        if state["left"] == 0:
            state["done"].set_result(None)


async def bench(sz: Sizes) -> None:
    loop = asyncio.get_running_loop()
    runtime = SingleThreadedAgentRuntime()
    await Echo.register(runtime, "echo", Echo)
    echo = AgentId("echo", "default")
    state: dict[str, Any] = {}
    for i in range(sz.subscribers):
        kind = f"counter-{i}"
        await runtime.register_agent_instance(Counter(state), AgentId(kind, "default"))
        await runtime.add_subscription(TypeSubscription("bench", kind))
    runtime.start()

    async def one_caller(n: int) -> None:
        send = runtime.send_message
        for _ in range(n):
            await send(MSG, echo)

    async def many_callers(n: int) -> None:
        await asyncio.gather(*(one_caller(n // sz.callers) for _ in range(sz.callers)))

    topic = TopicId("bench", "default")

    async def publish(deliveries: int) -> None:
        for _ in range(max(1, deliveries // sz.subscribers)):
            state["left"] = sz.subscribers
            state["done"] = loop.create_future()
            await runtime.publish_message(MSG, topic)
            await state["done"]

    total = sz.callers * sz.calls_per_caller
    await run_cases([
        Case("roundtrip", IMPL, sz.roundtrip, one_caller, "calls/s"),
        Case("concurrent", IMPL, total, many_callers, "calls/s", {"callers": sz.callers}),
        Case("broadcast", IMPL, sz.subscribers, publish, "deliveries/s",
             {"rounds": sz.broadcast_rounds}),
    ], sz.repeats)
    await runtime.stop()


class Idle(RoutedAgent):
    """An agent that is only spawned."""

    def __init__(self) -> None:
        super().__init__("idle")

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
        return message


async def spawn_child(n: int) -> None:
    runtime = SingleThreadedAgentRuntime()
    await runtime.register_agent_instance(Idle(), AgentId("idle", "warm-up"))

    async def spawn(count: int) -> None:
        register = runtime.register_agent_instance
        for i in range(count):
            await register(Idle(), AgentId("idle", str(i)))

    await measure_spawn(IMPL, n, spawn)


async def main(argv: list[str]) -> None:
    await bench_main(argv, __file__, (IMPL,), bench, lambda _impl, n: spawn_child(n))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
