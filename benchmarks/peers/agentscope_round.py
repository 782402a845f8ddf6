"""AgentScope 1.0.x side of ``bench_round.py``: the simulation round; prints JSON lines.

Run by the peer's own venv (see ``benchmarks/setup_peers.sh``)::

    .venvs/agentscope/bin/python benchmarks/peers/agentscope_round.py N ROUNDS

AgentScope has no runtime: ``fanout_pipeline`` makes one task per agent around a direct
coroutine call, and ``MsgHub.broadcast`` awaits every participant's ``observe`` in turn.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("AGENTSCOPE_DISABLE_CONSOLE_OUTPUT", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentscope.agent import AgentBase
from agentscope.message import Msg
from agentscope.pipeline import MsgHub, fanout_pipeline

from _round import HEARD, run

IMPL = "agentscope"


class Villager(AgentBase):
    """Draws a number when asked; keeps the last few messages it observed."""

    def __init__(self, name: str, rng: random.Random) -> None:
        super().__init__()
        self.name = name
        self.rng = rng
        self.heard: list[str] = []

    async def reply(self, msg: Msg | None = None) -> Msg:  # type: ignore[override]
        return Msg(self.name, str(self.rng.randint(0, 100)), "assistant")

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        if isinstance(msg, Msg):
            self.heard = [*self.heard[-(HEARD - 1):], msg.get_text_content() or ""]

    async def handle_interrupt(self, *args: Any, **kwargs: Any) -> Msg:
        raise NotImplementedError


async def main(n: int, rounds: int) -> None:
    rng = random.Random(0)

    async def create_and_join(count: int) -> tuple[MsgHub, list[Villager]]:
        agents = [Villager(f"villager-{i}", rng) for i in range(count)]
        hub = MsgHub(agents, enable_auto_broadcast=False)
        await hub.__aenter__()
        return hub, agents

    async def play_round(state: tuple[MsgHub, list[Villager]], r: int) -> float:
        hub, agents = state
        replies = await fanout_pipeline(agents, Msg("mayor", f"round {r}", "user"))
        mean = sum(int(m.get_text_content() or 0) for m in replies) / len(replies)
        await hub.broadcast(Msg("mayor", f"round {r} mean {mean:.2f}", "user"))
        return mean

    await run(IMPL, n, rounds, create_and_join, play_round,
              lambda count: [Villager(f"villager-{i}", rng) for i in range(count)])


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
