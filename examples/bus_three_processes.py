"""Agents in three processes on one ZeroMQ bus, with one command.

    python examples/bus_three_processes.py

This process is the head; it starts two node processes (this same file with ``--node``),
each hosting one agent. The agents' code does not know they are remote: a ``MsgHub``
shares their replies across the processes, and a reply streams back chunk by chunk.
"""

from __future__ import annotations

import asyncio
import sys

from agentplex import AgentBase, Msg, MsgHub, Runtime, ScriptedChatModel
from agentplex.bus import ZmqTransport
from agentplex.model import ChatResponse

LINES = {
    "alice": ["I think actors make concurrency easy.", "Agreed, and traces explain it all."],
    "bob": ["Only if messages are typed and replies never hang.", "Then we agree."],
}


class Speaker(AgentBase):
    """Answers from a scripted model, streaming its words as it goes."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model = ScriptedChatModel(LINES[name], stream=True)
        self.heard: list[str] = []
        self.set_console_output_enabled(False)

    async def reply(self, msg: Msg | None = None) -> Msg:
        out = Msg(self.name, "", "assistant")
        stream = await self.model([Msg("user", f"heard: {self.heard}", "user")])
        assert not isinstance(stream, ChatResponse)  # the model streams (stream=True)
        async for chunk in stream:
            out.content = chunk.content
            await self.print(out, last=chunk.is_last)
        return out

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        for m in msg if isinstance(msg, list) else [msg] if msg else []:
            self.heard.append(f"{m.name}: {m.get_text_content()}")


async def node(head: str, name: str) -> None:
    async with Runtime(ZmqTransport(head=head)) as rt:
        await rt.spawn(Speaker(name), name)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def main() -> None:
    async with Runtime(ZmqTransport(), default_timeout=30) as rt:
        endpoint = rt.transport.endpoint  # type: ignore[attr-defined]
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--node", endpoint, name,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE) for name in LINES]
        try:
            for p in procs:  # wait for each node to report its agent is up
                await p.stdout.readline()  # type: ignore[union-attr]
            alice, bob = rt.ref("alice"), rt.ref("bob")
            async with MsgHub([alice, bob], announcement=Msg("host", "Debate!", "user")):
                for agent in (alice, bob, alice, bob):
                    print("streaming:", end=" ", flush=True)
                    shown: set[str] = set()
                    async for msg, last in agent.stream(Msg("host", "your turn", "user")):
                        if not last:
                            print(".", end="", flush=True)
                        elif msg.id not in shown:  # the final print, then the reply itself
                            shown.add(msg.id)
                            print(f"\n{msg.name}> {msg.get_text_content()}")
        finally:
            for p in procs:
                p.stdin.close()  # type: ignore[union-attr]
                await asyncio.wait_for(p.wait(), 10)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--node"]:
        asyncio.run(node(sys.argv[2], sys.argv[3]))
    else:
        asyncio.run(main())
