"""Spans of agents and models, checked in a fresh interpreter (the tracer provider is global)."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import asyncio, json
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from agentplex import AgentBase, Msg, Runtime, ScriptedChatModel
    from agentplex.model import collect
    from agentplex.tracing import is_enabled

    assert not is_enabled()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert is_enabled()

    class Asker(AgentBase):
        def __init__(self, name, model, other=None):
            super().__init__(name)
            self.model, self.other = model, other
        async def reply(self, msg=None):
            await collect(await self.model([{"role": "user", "content": "hi"}]))
            if self.other is not None:
                await self.other(Msg(self.name, "pass it on", "user"))
            return Msg(self.name, "done", "assistant")

    async def main():
        async with Runtime():
            inner = Asker("inner", ScriptedChatModel(["a"], stream=True, model_name="m2"))
            outer = Asker("outer", ScriptedChatModel(["b"], model_name="m1"), inner)
            tracer = trace.get_tracer("test")
            with tracer.start_as_current_span("root"):
                await outer(Msg("user", "go", "user"))

    asyncio.run(main())
    spans = {s.name: s for s in exporter.get_finished_spans()}
    out = {name: (s.parent.span_id if s.parent else None, s.context.span_id, s.context.trace_id,
                  dict(s.attributes)) for name, s in spans.items()}
    print(json.dumps({k: [v[0], v[1], v[2], v[3]] for k, v in out.items()}))
''')


def test_spans_nest_across_agents_and_models() -> None:
    import json

    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    spans = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(spans) == {"root", "invoke_agent outer", "chat m1", "invoke_agent inner",
                          "chat m2"}
    parent = {name: v[0] for name, v in spans.items()}
    sid = {name: v[1] for name, v in spans.items()}
    assert parent["invoke_agent outer"] == sid["root"]
    assert parent["chat m1"] == sid["invoke_agent outer"]
    assert parent["invoke_agent inner"] == sid["invoke_agent outer"]
    assert parent["chat m2"] == sid["invoke_agent inner"]
    assert len({v[2] for v in spans.values()}) == 1  # one trace
    chat = spans["chat m2"][3]
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.request.model"] == "m2"
    assert chat["gen_ai.usage.output_tokens"] == 1
    assert spans["invoke_agent inner"][3]["gen_ai.agent.name"] == "inner"
