"""A node process for the cross-process trace test: hosts one agent, traces to a file.

    python -m tests.support.traced_node HEAD NODE_ID ROLE SPANS_FILE  (ROLE: relay | worker)
"""

from __future__ import annotations

import asyncio
import signal
import sys

from agentplex import AgentBase, Msg, ScriptedChatModel, connect
from agentplex.model import collect
from agentplex.tracing import configure_tracing, dispatcher


class Relay(AgentBase):
    """Passes the question on to the worker, wherever it runs."""

    async def reply(self, msg: Msg | None = None) -> Msg:
        answer = await self.runtime.ref("worker").call(msg, timeout=30)
        return Msg(self.name, f"relayed: {answer.get_text_content()}", "assistant")


class Worker(AgentBase):
    """Answers with a (scripted) model."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model = ScriptedChatModel(["forty-two"], cycle=True, model_name="oracle")

    async def reply(self, msg: Msg | None = None) -> Msg:
        response = await collect(await self.model([{"role": "user", "content": "?"}]))
        return Msg(self.name, response.text, "assistant")


async def main(head: str, node_id: str, role: str, spans: str) -> None:
    configure_tracing(file=spans, batch=False, from_env=False)
    async with connect(head, node_id=node_id) as rt:
        agent = Relay("relay") if role == "relay" else Worker("worker")
        await rt.spawn(agent, role)
        print("ready", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
    dispatcher().shutdown()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
