"""A simulation of N agents on the scripted model, timed.

Every agent is an actor; each round all of them answer concurrently (fan-out), then one
summary is broadcast to all of them through a MsgHub. Runs with no model at all, so it
measures the runtime itself.

    python examples/simulation.py --agents 1000 --rounds 3
    python examples/simulation.py --agents 10000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from agentplex import AgentBase, Msg, MsgHub, Runtime, ScriptedChatModel, fanout_pipeline
from agentplex.model import ChatModelBase, collect


class Villager(AgentBase):
    """Keeps the last few messages it heard and asks the shared model for its answer."""

    def __init__(self, name: str, model: ChatModelBase) -> None:
        super().__init__(name)
        self.model = model
        self.heard: list[str] = []
        self.set_console_output_enabled(False)

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        if isinstance(msg, Msg):
            self.heard = [*self.heard[-3:], msg.get_text_content() or ""]

    async def reply(self, msg: Msg | None = None) -> Msg:
        question = msg.get_text_content() if msg is not None else ""
        response = await collect(await self.model([{"role": "user", "content": question}]))
        return Msg(self.name, response.text, "assistant")


async def simulate(agents: int, rounds: int, seed: int = 0) -> dict[str, float]:
    rng = random.Random(seed)
    model = ScriptedChatModel(lambda messages, **_: str(rng.randint(0, 100)),
                              model_name="scripted-villagers")
    timings: dict[str, float] = {}
    async with Runtime():
        start = time.perf_counter()
        villagers = [Villager(f"villager-{i}", model) for i in range(agents)]
        async with MsgHub(villagers, enable_auto_broadcast=False) as hub:
            timings["spawn_and_join_s"] = time.perf_counter() - start
            for r in range(rounds):
                t = time.perf_counter()
                replies = await fanout_pipeline(villagers, Msg("mayor", f"round {r}", "user"))
                mean = sum(int(m.get_text_content() or 0) for m in replies) / len(replies)
                await hub.broadcast(Msg("mayor", f"round {r} mean {mean:.2f}", "user"))
                timings[f"round_{r}_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - start
        timings["mean_heard"] = sum(len(v.heard) for v in villagers) / agents
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    timings = asyncio.run(simulate(args.agents, args.rounds))
    per_round = [v for k, v in timings.items() if k.startswith("round_")]
    print(f"{args.agents} agents, {args.rounds} rounds")
    print(f"spawn + join hub: {timings['spawn_and_join_s']:.3f}s")
    for i, seconds in enumerate(per_round):
        print(f"round {i}: {seconds:.3f}s ({args.agents / seconds:,.0f} replies/s)")
    print(f"total: {timings['total_s']:.3f}s")


if __name__ == "__main__":
    main()
