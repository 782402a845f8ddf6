"""Tool calls are traced as ``execute_tool`` spans inside the agent's ``invoke_agent`` span.

Runs in a subprocess: installing a tracer provider is once per process.
"""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r'''
import asyncio, json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from agentplex.agent import ReActAgent
from agentplex.message import Msg, ToolUseBlock
from agentplex.model import ScriptedChatModel
from agentplex.runtime import Runtime
from agentplex.tool import Toolkit

def add(a: int, b: int) -> int:
    """Add."""
    return a + b

async def main():
    toolkit = Toolkit()
    toolkit.register_tool_function(add)
    model = ScriptedChatModel([ToolUseBlock(id="c1", name="add", input={"a": 1, "b": 2}), "3"])
    async with Runtime():
        agent = ReActAgent("bot", "sys", model, toolkit=toolkit)
        agent.set_console_output_enabled(False)
        await asyncio.wait_for(agent(Msg("user", "1+2?", "user")), 10)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    tool = spans["execute_tool add"]
    print(json.dumps({
        "names": sorted(spans),
        "tool_parent": [n for n, s in spans.items()
                        if tool.parent and s.context.span_id == tool.parent.span_id],
        "call_id": tool.attributes.get("gen_ai.tool.call.id"),
    }))

asyncio.run(main())
'''


def test_tool_spans_nest_in_the_agent_span() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=60, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert "execute_tool add" in report["names"]
    assert "invoke_agent bot" in report["names"]
    assert report["tool_parent"] == ["invoke_agent bot"]
    assert report["call_id"] == "c1"
