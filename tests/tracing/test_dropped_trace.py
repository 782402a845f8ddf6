"""A trace sampling drops, in one process: nothing recorded, ids kept for everyone else.

Checked in a fresh interpreter (the tracer provider is global): with no trace kept, each
call still gets a trace id of its own, which a user's OpenTelemetry span inside the reply
and the propagated ``traceparent`` carry with the ``sampled`` flag off, while agentplex's
own instrumentation knows there is nothing to record and no span reaches the file.
"""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = '''
import asyncio, json, sys
from opentelemetry import trace
from agentplex import AgentBase, Msg, Runtime, ScriptedChatModel
from agentplex.model import collect
from agentplex.tracing import configure_tracing, dispatcher
from agentplex.tracing.lowlevel import inject_context, would_record

configure_tracing(file=sys.argv[1], from_env=False, sampling=0.0)
seen = []


class Probe(AgentBase):
    def __init__(self):
        super().__init__("probe")
        self.model = ScriptedChatModel(["ok"], cycle=True)
        self.set_console_output_enabled(False)

    async def reply(self, msg=None):
        outer = trace.get_current_span()
        quiet = not would_record()
        await collect(await self.model([{"role": "user", "content": "x"}]))
        with trace.get_tracer("user").start_as_current_span("mine") as mine:
            headers = inject_context()
        ctx, own = outer.get_span_context(), mine.get_span_context()
        seen.append({"valid": ctx.is_valid, "sampled": ctx.trace_flags.sampled,
                     "recording": outer.is_recording(), "quiet": quiet,
                     "same_context": ctx is outer.get_span_context(),
                     "trace": f"{ctx.trace_id:032x}", "span": f"{ctx.span_id:016x}",
                     "mine_trace": f"{own.trace_id:032x}", "mine_recording": mine.is_recording(),
                     "traceparent": headers["traceparent"]})
        return Msg("probe", "ok", "assistant")


async def main():
    async with Runtime():
        agent = Probe()
        for _ in range(3):
            await agent(Msg("user", "hi", "user"))
    dispatcher().force_flush()
    print(json.dumps(seen))


asyncio.run(main())
'''


def test_a_dropped_trace_records_nothing_and_keeps_its_ids(tmp_path: Path) -> None:
    spans = tmp_path / "spans.jsonl"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(spans)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(seen) == 3
    assert len({s["trace"] for s in seen}) == 3  # a trace id of its own per call
    for s in seen:
        assert s["valid"] and not s["sampled"] and not s["recording"]
        assert s["quiet"]  # agentplex's instrumentation skips its work
        assert s["same_context"]  # built once, when first asked for
        assert s["mine_trace"] == s["trace"] and not s["mine_recording"]
        version, trace_id, _, flags = s["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", s["trace"], "00")
    assert spans.read_text() == ""
