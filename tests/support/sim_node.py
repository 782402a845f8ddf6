"""A node process for the cross-process replay test: hosts players ``p0000``... that each
guess a random number with a (scripted) model.

    python -m tests.support.sim_node HEAD NODE_ID FIRST COUNT

Prints ``ready`` once its players are spawned; stops on SIGTERM. Its random numbers are
not seeded: only a replay gives the same guesses again.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from typing import Any

from agentplex import AgentBase, Msg, ScriptedChatModel, connect
from agentplex.model import collect

HEARTBEAT_TIMEOUT = 120.0
"""Seconds of silence before a node counts as lost: a node busy with thousands of queued
calls on a loaded machine answers pings late."""


def guess(messages: list[dict[str, Any]], **_: Any) -> str:
    return str(random.randint(0, 100))


class Player(AgentBase):
    """Answers each round with its model's guess."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model = ScriptedChatModel(guess, model_name="guesser")
        self.set_console_output_enabled(False)

    async def reply(self, msg: Msg | None = None) -> Msg:
        text = msg.get_text_content() if msg is not None else ""
        response = await collect(await self.model([{"role": "user", "content": text or ""}]))
        return Msg(self.name, response.text, "assistant")


def player_name(i: int) -> str:
    """The name of player ``i``."""
    return f"p{i:04d}"


async def main(head: str, node_id: str, first: int, count: int) -> None:
    async with connect(head, node_id=node_id, heartbeat_timeout=HEARTBEAT_TIMEOUT) as rt:
        for i in range(first, first + count):
            await rt.spawn(Player(player_name(i)), player_name(i))
        print("ready", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
