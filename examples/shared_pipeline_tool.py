"""Agents sharing one Transformers pipeline tool placed on a (declared) GPU node.

The cluster has a GPU node (one declared 24 GiB GPU) and a CPU node. A
``PipelineToolActor`` asks for the GPU, so the scheduler puts it on the GPU node, where the
pipeline loads once, on the first call, and then serves every agent. Each agent is a
``ReActAgent`` whose toolkit holds an ``ActorTool`` for it.

    python examples/shared_pipeline_tool.py                      # tiny model, scripted agents
    python examples/shared_pipeline_tool.py --agents 8 --pipeline-model path/to/classifier
    python examples/shared_pipeline_tool.py --chat transformers:default   # SmolLM2 agents

``--pipeline-model tiny`` (the default) builds a small untrained sentiment classifier from
a configuration in a temporary folder, so nothing is downloaded; its labels are arbitrary.
Without a GPU the "GPU" is only declared and the pipeline runs on the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from agentplex.agent import ReActAgent
from agentplex.cluster import GPU, ActorTool, Cluster, NodeSpec, Resources
from agentplex.message import Msg, ToolUseBlock
from agentplex.model import ChatModelBase, ScriptedChatModel, init_chat_model
from agentplex.tool import Toolkit

REVIEWS = ["the movie was great", "the movie was awful", "good movie", "bad movie",
           "the movie is good", "the movie was bad", "great", "awful movie"]
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "great",
         "awful", "the", "is", "was"]


def tiny_classifier(folder: Path) -> str:
    """Save a 1-layer BERT sentiment classifier built from a configuration in ``folder``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS))
    config = BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=64,
                        id2label={0: "NEGATIVE", 1: "POSITIVE"},
                        label2id={"NEGATIVE": 0, "POSITIVE": 1})
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return str(folder)


def chat_model(spec: str, index: int, review: str) -> ChatModelBase:
    """The agent's model: a scripted one (call the tool, then report its label) or real."""
    if spec != "scripted":
        return init_chat_model(spec)

    def script(messages: list[Msg], **_: object) -> str | ToolUseBlock:
        results = messages[-1].get_content_blocks("tool_result")
        if not results:
            return ToolUseBlock(id=f"call-{index}", name="sentiment", input={"text": review})
        if results[0].is_error:  # e.g. a --pipeline-model that is not there
            return f"The classifier failed: {results[0].output}"
        label = json.loads(str(results[0].output))[0]["label"]
        return f"The classifier says {label}."

    return ScriptedChatModel(script)


async def main(agents: int, pipeline_model: str, chat: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        model_path = tiny_classifier(Path(scratch)) if pipeline_model == "tiny" \
            else pipeline_model
        async with await Cluster(checkpoint_interval=None).start() as cluster:
            await cluster.add_node(NodeSpec(id="gpu-node", cpus=4, labels={"kind": "gpu"},
                                            gpus=[GPU(index=0, total_memory="24GiB")]))
            await cluster.add_node(NodeSpec(id="cpu-node", cpus=4, labels={"kind": "cpu"}))
            tool_ref = await cluster.spawn(
                "agentplex.cluster:PipelineToolActor", "text-classification", model_path,
                tool_name="sentiment", name="sentiment-tool", resources=Resources(gpus=1))
            placement = await cluster.placement_of("sentiment-tool")
            print(f"pipeline tool placed on {placement.node_id if placement else '?'}")
            team = []
            for i in range(agents):
                review = REVIEWS[i % len(REVIEWS)]
                agent = ReActAgent(f"critic-{i}", "Judge reviews with the sentiment tool.",
                                   chat_model(chat, i, review), Toolkit())
                agent.set_console_output_enabled(False)
                agent.toolkit.register_tool_function(
                    await ActorTool.connect(tool_ref, timeout=300))
                await cluster.runtime.spawn(agent, agent.name)
                team.append((agent, review))
            started = time.perf_counter()
            replies = await asyncio.gather(*(
                agent(Msg("editor", f"Is this review positive? {review!r}", "user"))
                for agent, review in team))
            for (agent, review), reply in zip(team, replies, strict=True):
                print(f"{agent.name} on {review!r}: {reply.get_text_content()}")
            described = await tool_ref.call("describe", timeout=30)
            loaded = ", ".join(described["loaded"])
            print(f"{described['served']} calls served by "
                  + (f"one loaded pipeline ({loaded})" if loaded else "no loaded pipeline")
                  + f" in {time.perf_counter() - started:.2f}s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--pipeline-model", default="tiny")
    parser.add_argument("--chat", default="scripted")
    args = parser.parse_args()
    asyncio.run(main(args.agents, args.pipeline_model, args.chat))
