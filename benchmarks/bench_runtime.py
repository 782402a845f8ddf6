"""Runtime benchmarks for agentplex and the raw asyncio baselines; prints JSON lines.

Run in the project's venv::

    .venv/bin/python benchmarks/bench_runtime.py            # full run
    .venv/bin/python benchmarks/bench_runtime.py --quick    # smoke run (seconds)
    .venv/bin/python benchmarks/bench_runtime.py --no-spawn # skip the spawn sizes

Benchmarks (``bench`` key):

* ``roundtrip`` — sequential request/reply between two parties, calls/s.
  ``asyncio``: a future sent through an ``asyncio.Queue`` to a consumer task that resolves
  it. ``agentplex-agent``: an agent awaiting another agent inside its ``reply``.
  ``agentplex-driver``: a plain task awaiting ``await agent(msg)``. ``agentplex-actor``:
  ``ActorRef.call`` on a bare :class:`Actor` (the runtime core without the agent layer).
* ``concurrent`` — many callers, one callee, total calls/s.
* ``broadcast`` — one message to 1,000 receivers until every one has handled it,
  deliveries/s. ``asyncio``: ``put_nowait`` to 1,000 queues each drained by its own task.
  ``agentplex-publish``: ``Runtime.publish`` to 1,000 subscribed agents.
  ``agentplex-msghub``: ``MsgHub.broadcast`` to 1,000 participants.
* ``spawn`` / ``spawn_memory`` — create N idle agents (each N in a fresh interpreter):
  agents/s and added resident bytes per agent. ``asyncio``: the naive actor, one task
  waiting on its own queue per agent.

Every reply returns the message it got, so no figure measures building messages.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from _benchlib import (
    Case,
    Sizes,
    bench_main,
    measure_spawn,
    run_cases,
)
from agentplex.agent import AgentBase
from agentplex.message import Msg
from agentplex.orchestration import MsgHub
from agentplex.runtime import Actor, Runtime

MSG = Msg("bench", "ping", "user")


# -- actors and agents ------------------------------------------------------------------


class Echo(AgentBase):
    """Replies with the message it got."""

    async def reply(self, msg: Msg) -> Msg:
        return msg


class Caller(AgentBase):
    """Calls ``target`` ``rounds`` times, one after another, inside its own reply."""

    target: AgentBase
    rounds = 0

    async def reply(self, msg: Msg) -> Msg:
        target = self.target
        for _ in range(self.rounds):
            await target(msg)
        return msg


class Counter(AgentBase):
    """Observes messages and resolves ``done`` once ``left`` reaches zero (shared)."""

    state: dict[str, Any]

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        state = self.state
        state["left"] -= 1
        if state["left"] == 0:
            state["done"].set_result(None)


class EchoActor(Actor):
    """A bare actor answering calls with their message."""

    async def handle_call(self, message: Any) -> Any:
        return message


class Idle(AgentBase):
    """An agent that is only spawned, never called."""

    async def reply(self, msg: Msg) -> Msg:
        return msg


class IdleActor(Actor):
    """A bare actor that is only spawned."""


# -- raw asyncio baselines ----------------------------------------------------------------


async def _asyncio_server(queue: asyncio.Queue[tuple[asyncio.Future[Any], Any]]) -> None:
    while True:
        fut, payload = await queue.get()
        if not fut.done():
            fut.set_result(payload)


def asyncio_cases(sz: Sizes, tasks: list[asyncio.Task[None]]) -> list[Case]:
    """The raw asyncio baselines; their long-lived tasks are appended to ``tasks``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[asyncio.Future[Any], Any]] = asyncio.Queue()
    tasks.append(asyncio.create_task(_asyncio_server(queue)))

    async def one_caller(n: int) -> None:
        for _ in range(n):
            fut = loop.create_future()
            queue.put_nowait((fut, MSG))
            await fut

    async def many_callers(n: int) -> None:
        await asyncio.gather(*(one_caller(n // sz.callers) for _ in range(sz.callers)))

    # fan-out: one queue and one consumer task per receiver
    state: dict[str, Any] = {}

    async def consumer(q: asyncio.Queue[Any]) -> None:
        while True:
            await q.get()
            state["left"] -= 1
            if state["left"] == 0:
                state["done"].set_result(None)

    queues: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in range(sz.subscribers)]
    tasks.extend(asyncio.create_task(consumer(q)) for q in queues)

    async def fan_out(deliveries: int) -> None:
        for _ in range(max(1, deliveries // sz.subscribers)):
            state["left"] = sz.subscribers
            state["done"] = loop.create_future()
            for q in queues:
                q.put_nowait(MSG)
            await state["done"]

    total = sz.callers * sz.calls_per_caller
    return [
        Case("roundtrip", "asyncio", sz.roundtrip, one_caller, "calls/s"),
        Case("concurrent", "asyncio", total, many_callers, "calls/s",
             {"callers": sz.callers}),
        Case("broadcast", "asyncio", sz.subscribers, fan_out, "deliveries/s",
             {"rounds": sz.broadcast_rounds}),
    ]


# -- agentplex ------------------------------------------------------------------------------


async def agentplex_cases(sz: Sizes, rt: Runtime) -> list[Case]:
    """agentplex's cases, their agents spawned in ``rt``."""
    loop = asyncio.get_running_loop()
    echo, caller = Echo("echo"), Caller("caller")
    caller.target = echo
    await rt.spawn(echo)
    await rt.spawn(caller)
    actor = await rt.spawn(EchoActor(), "echo-actor")

    async def agent_to_agent(n: int) -> None:
        caller.rounds = n
        await caller(MSG)

    async def driver(n: int) -> None:
        for _ in range(n):
            await echo(MSG)

    async def actor_calls(n: int) -> None:
        for _ in range(n):
            await actor.call(MSG)

    async def many_callers(n: int) -> None:
        await asyncio.gather(*(driver(n // sz.callers) for _ in range(sz.callers)))

    # broadcast to 1,000 observing agents: once through a plain topic, once through a hub
    state: dict[str, Any] = {}
    counters = [Counter(f"counter-{i}") for i in range(sz.subscribers)]
    for agent in counters:
        agent.state = state
        await rt.spawn(agent)
        await rt.subscribe("bench", agent.ref)
    hub = MsgHub(counters, enable_auto_broadcast=False)
    await hub.__aenter__()  # left at the runtime's shutdown

    def broadcaster(send: Callable[[], Awaitable[None]]) -> Callable[[int], Awaitable[None]]:
        async def run(deliveries: int) -> None:
            for _ in range(max(1, deliveries // sz.subscribers)):
                state["left"] = sz.subscribers
                state["done"] = loop.create_future()
                await send()
                await state["done"]

        return run

    async def publish() -> None:
        await rt.publish("bench", MSG)

    async def hub_broadcast() -> None:
        await hub.broadcast(MSG)

    total = sz.callers * sz.calls_per_caller
    rounds = {"rounds": sz.broadcast_rounds}
    return [
        Case("roundtrip", "agentplex-agent", sz.roundtrip, agent_to_agent, "calls/s"),
        Case("roundtrip", "agentplex-driver", sz.roundtrip, driver, "calls/s"),
        Case("roundtrip", "agentplex-actor", sz.roundtrip, actor_calls, "calls/s"),
        Case("concurrent", "agentplex-agent", total, many_callers, "calls/s",
             {"callers": sz.callers}),
        Case("broadcast", "agentplex-publish", sz.subscribers, broadcaster(publish),
             "deliveries/s", rounds),
        Case("broadcast", "agentplex-msghub", sz.subscribers, broadcaster(hub_broadcast),
             "deliveries/s", rounds),
    ]


async def bench_in_process(sz: Sizes) -> None:
    """Every in-process figure, ours and the asyncio baselines measured round robin."""
    tasks: list[asyncio.Task[None]] = []
    async with Runtime() as rt:
        ours = await agentplex_cases(sz, rt)
        base = asyncio_cases(sz, tasks)
        await asyncio.sleep(0)
        # interleave each of our cases right after the baseline of the same bench
        cases = [c for b in base for c in (b, *(o for o in ours if o.bench == b.bench))]
        await run_cases(cases, sz.repeats)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- spawn (one size per fresh interpreter) -------------------------------------------------


async def spawn_child(impl: str, n: int) -> None:
    if impl == "asyncio":

        async def naive_actor(queue: asyncio.Queue[Any]) -> None:
            while True:
                await queue.get()

        async def spawn_tasks(count: int) -> list[Any]:
            queues: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in range(count)]
            tasks = [asyncio.create_task(naive_actor(q)) for q in queues]
            await asyncio.sleep(0)  # let every task start and park on its queue
            return [queues, tasks]

        await measure_spawn(impl, n, spawn_tasks)
        return

    async with Runtime() as rt:
        await rt.spawn(IdleActor(), "warm-up")
        cls = Idle if impl == "agentplex-agent" else IdleActor

        async def spawn_agents(count: int) -> None:
            spawn = rt.spawn
            for _ in range(count):
                await spawn(cls())

        await measure_spawn(impl, n, spawn_agents)
        tasks = len(asyncio.all_tasks())
        if tasks != 1:
            raise SystemExit(f"idle agents should cost no task, found {tasks} tasks")


async def main(argv: list[str]) -> None:
    await bench_main(argv, __file__, ("agentplex-agent", "agentplex-actor", "asyncio"),
                     bench_in_process, spawn_child)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
