"""A scenario for sweeps (``tests/support/sweep_scenario.py:Steady``): its metric is known
from the seed, the round and the parameters, so a sweep's summary can be checked number
for number; ``crash`` makes its rounds raise, ``sleep`` makes them slow."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from agentplex import AgentBase, Msg
from agentplex.sim import Scenario, Sim


class Echo(AgentBase):
    """Answers every message with its own name."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.set_console_output_enabled(False)

    async def reply(self, msg: Msg | None = None) -> Msg:
        return Msg(self.name, self.name, "assistant")


class Steady(Scenario):
    """Each round asks every agent once and records ``value = seed + offset + round``."""

    agent = Echo
    name_prefix = "echo-"

    class Params(BaseModel):
        offset: float = 0.0
        crash: bool = False
        sleep: float = 0.0

    def agent_args(self, index: int) -> dict[str, Any]:
        return {}

    async def step(self, sim: Sim) -> None:
        if self.params.crash:
            raise RuntimeError("asked to crash")
        if self.params.sleep:
            await asyncio.sleep(self.params.sleep)
        replies = await sim.call_many(sim.agents, sim.say("hello"))
        sim.record(value=self.seed + self.params.offset + sim.round,
                   answered=sum(isinstance(r, Msg) for r in replies), label="text")
