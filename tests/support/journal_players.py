"""Players of the journal tests, as a user's own module (no ``tests.`` package): the tests
copy this file as ``players.py`` into each node's own working directory, and the nodes
(``agentplex node --allow players``) import it from there.

Each answer is a deterministic function of the player's name and the question, found
with a (scripted) model call and checked with a tool call, so two runs of one game write
the same transcript whatever process or machine each player lives on.
"""

from __future__ import annotations

import zlib
from typing import Any

from agentplex import AgentBase, Msg, ScriptedChatModel
from agentplex.message import ToolUseBlock
from agentplex.model import collect
from agentplex.tool import Toolkit


def guess(messages: list[dict[str, Any]], **_: Any) -> str:
    """A guess from 0 to 100 that depends only on the prompt."""
    return str(zlib.crc32(str(messages[-1]["content"]).encode()) % 101)


def clamp(value: int) -> int:
    """Keep a guess within 0 to 100.

    Args:
        value: the guess.
    """
    return max(0, min(100, value))


class Player(AgentBase):
    """Answers each question with its model's guess, passed through a tool."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model = ScriptedChatModel(guess, model_name="guesser")
        self.toolkit = Toolkit()
        self.toolkit.register_tool_function(clamp)
        self.set_console_output_enabled(False)

    async def reply(self, msg: Msg | None = None) -> Msg:
        text = msg.get_text_content() if msg is not None else ""
        response = await collect(await self.model(
            [{"role": "user", "content": f"{self.name}: {text}"}]))
        result = await self.toolkit.execute(ToolUseBlock(
            id=f"{self.name}-clamp", name="clamp", input={"value": int(response.text)}))
        out = result.output
        answer = out if isinstance(out, str) else "".join(getattr(b, "text", "") for b in out)
        return Msg(self.name, answer, "assistant")
