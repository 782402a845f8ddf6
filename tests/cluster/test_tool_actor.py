"""Tool actors: one loaded pipeline on a (declared) GPU node, shared by many agents."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from examples.shared_pipeline_tool import tiny_classifier

from agentplex.agent import ReActAgent
from agentplex.cluster import GPU, ActorTool, Cluster, NodeSpec, Resources, ToolActor
from agentplex.message import Msg, ToolUseBlock
from agentplex.model import ScriptedChatModel
from agentplex.tool import AgentImage, Toolkit
from tests.support.actors import Echo

pytestmark = pytest.mark.anyio


async def gpu_and_cpu() -> Cluster:
    cluster = await Cluster(checkpoint_interval=None).start()
    await cluster.add_node(NodeSpec(id="gpu-node", cpus=4, labels={"kind": "gpu"},
                                    gpus=[GPU(index=0, total_memory="24GiB")]))
    await cluster.add_node(NodeSpec(id="cpu-node", cpus=4, labels={"kind": "cpu"}))
    return cluster


def checker(i: int) -> ReActAgent:
    model = ScriptedChatModel([
        ToolUseBlock(id=f"c{i}", name="sentiment", input={"text": "the movie was good"}),
        "Checked.",
    ])
    agent = ReActAgent(f"checker-{i}", "Check sentiment.", model, Toolkit())
    agent.set_console_output_enabled(False)
    return agent


async def test_agents_share_one_pipeline_placed_on_the_gpu_node(tmp_path: Path) -> None:
    folder = tiny_classifier(tmp_path / "classifier")
    async with await gpu_and_cpu() as cluster:
        ref = await cluster.spawn("agentplex.cluster:PipelineToolActor", "text-classification",
                                  str(folder), name="sentiment-tool", device="cpu",
                                  tool_name="sentiment", resources=Resources(gpus=1))
        placement = await cluster.placement_of("sentiment-tool")
        assert placement is not None and placement.node_id == "gpu-node"
        described = await ref.call("describe", timeout=10)
        assert described["loaded"] == []  # lazy: nothing loaded before the first call
        agents = [checker(i) for i in range(4)]
        for agent in agents:
            agent.toolkit.register_tool_function(await ActorTool.connect(ref, timeout=120))
            await cluster.runtime.spawn(agent, agent.name)
        replies = await asyncio.gather(*(a(Msg("user", "go", "user")) for a in agents))
        assert [r.get_text_content() for r in replies] == ["Checked."] * 4
        described = await ref.call("describe", timeout=10)
        assert described["served"] == 4 and described["loaded"] == ["sentiment"]
        for agent in agents:
            memory = await agent.memory.get_memory()
            result = memory[2].get_content_blocks("tool_result")[0]
            assert not result.is_error and isinstance(result.output, str)
            assert json.loads(result.output)[0]["label"] in ("POSITIVE", "NEGATIVE")


def picture(shade: int) -> AgentImage:
    """Draw a grey picture.

    Args:
        shade: the grey level, 0 to 255.
    """
    return AgentImage(np.full((2, 2, 3), shade, dtype=np.uint8))


async def test_media_and_errors_come_back_through_the_actor() -> None:
    async with await gpu_and_cpu() as cluster:
        ref = await cluster.runtime.spawn(ToolActor(picture), "painter")
        tool = await ActorTool.connect(ref)
        assert tool.schema().parameters["required"] == ["shade"]
        toolkit = Toolkit()
        toolkit.register_tool_function(tool)
        out = await toolkit.execute(ToolUseBlock(id="1", name="picture", input={"shade": 7}))
        assert isinstance(out.output, list)
        block = out.output[0]
        assert block.type == "image" and block.source.type == "base64"
        png = base64.b64decode(block.source.data)
        assert np.asarray(AgentImage(png).to_raw())[0, 0].tolist() == [7, 7, 7]
        bad = await toolkit.execute(ToolUseBlock(id="2", name="picture", input={"shade": "x"}))
        assert bad.is_error and "invalid arguments" in bad.output
        with pytest.raises(LookupError, match="none is 'nope'"):
            await ActorTool.connect(ref, "nope")
        echo = await cluster.runtime.spawn(Echo(), "echo")
        with pytest.raises(TypeError, match="'echo' is not a tool actor"):
            await ActorTool.connect(echo)


async def countdown(n: int) -> AsyncIterator[str]:
    """Count down, streaming the count so far.

    Args:
        n: where to start.
    """
    for i in range(n, 0, -1):
        yield " ".join(str(k) for k in range(n, i - 1, -1))


async def test_streaming_tools_stream_through_the_actor() -> None:
    async with await gpu_and_cpu() as cluster:
        ref = await cluster.runtime.spawn(ToolActor(countdown), "counter")
        toolkit = Toolkit()
        toolkit.register_tool_function(await ActorTool.connect(ref))
        chunks = [c async for c in toolkit.call_tool_function(
            ToolUseBlock(id="1", name="countdown", input={"n": 3}))]
        assert [c.text for c in chunks] == ["3", "3 2", "3 2 1", "3 2 1"]
        assert [c.is_last for c in chunks] == [False, False, False, True]
        assert (await ref.call("describe", timeout=10))["served"] == 1
