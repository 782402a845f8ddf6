"""Agents spread over a cluster, sharing one model actor placed on a GPU node.

Start a head and nodes, one command each (in separate terminals, or with ``&``):

    agentplex head --bind tcp://127.0.0.1:5555
    agentplex node --head tcp://127.0.0.1:5555 --id gpu-node --gpus 1 --gpu-memory 24GiB \\
        --label kind=gpu --allow agentplex.cluster --allow examples
    agentplex node --head tcp://127.0.0.1:5555 --id cpu-node --label kind=cpu \\
        --allow agentplex.cluster --allow examples

then run the agents (from the repository root, so ``examples`` is importable):

    python examples/cluster.py --head tcp://127.0.0.1:5555 --agents 20
    python examples/cluster.py --head tcp://127.0.0.1:5555 --model transformers:default

The model actor asks for one GPU and 4 GiB, so the scheduler puts it on the GPU node; the
agents ask for a small CPU share and are spread over the CPU nodes. ``agentplex status``
shows where everything landed. On a machine without GPUs the GPU is declared and the model
runs on the CPU of the GPU node.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from agentplex import AgentBase, Msg, connect
from agentplex.cluster import ClusterClient, RemoteChatModel, Resources
from agentplex.model import collect


class Citizen(AgentBase):
    """Answers with the shared remote model, wherever both of them run."""

    def __init__(self, name: str, model_actor: str) -> None:
        super().__init__(name)
        self.model = RemoteChatModel(model_actor, timeout=120)
        self.set_console_output_enabled(False)

    async def reply(self, msg: Msg | None = None) -> Msg:
        question = msg.get_text_content() if msg is not None else "Say hello."
        response = await collect(await self.model(
            [{"role": "user", "content": f"{question} Answer in one short sentence."}],
            max_new_tokens=24))
        return Msg(self.name, " ".join(response.text.split()), "assistant")


async def main(head: str, agents: int, model: str) -> None:
    async with connect(head) as runtime:
        cluster = ClusterClient(runtime, timeout=300)
        started = time.perf_counter()
        kwargs: dict[str, Any] = {"script": ["Hello from the shared model."], "cycle": True} \
            if model.startswith("scripted") else {}
        await cluster.spawn("agentplex.cluster:ModelActor", model, name="shared-llm",
                            resources=Resources(gpus=1, gpu_memory="4GiB"), **kwargs)
        refs = [await cluster.spawn("examples.cluster:Citizen", f"citizen-{i}", "shared-llm",
                                    name=f"citizen-{i}", resources=Resources(cpus=0.05),
                                    labels={"kind": "cpu"}, placement="spread")
                for i in range(agents)]
        print(f"placed 1 model actor and {agents} agents in "
              f"{time.perf_counter() - started:.2f}s")
        replies = await asyncio.gather(*(r.call(Msg("mayor", "How is your day?", "user"),
                                                timeout=300) for r in refs))
        for reply in replies[:5]:
            print(f"{reply.name}: {reply.get_text_content()}")
        for node in await cluster.status():
            print(f"{node['node']}: {len(node['actors'])} actors")
        for ref in refs:
            await cluster.stop(ref.name)
        await cluster.stop("shared-llm")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", default="tcp://127.0.0.1:5555")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--model", default="scripted:shared")
    args = parser.parse_args()
    asyncio.run(main(args.head, args.agents, args.model))
