"""The run folder streams: memory stays bounded however long the run, totals stay exact
whatever sampling keeps, and sampled traces stay whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentplex import AgentBase, Msg, Runtime, ScriptedChatModel, Toolkit
from agentplex.message import ToolUseBlock
from agentplex.model import collect
from agentplex.tracing import experiment

pytestmark = pytest.mark.anyio


def double(x: int) -> int:
    """Double a number.

    Args:
        x: the number.
    """
    return 2 * x


class Worker(AgentBase):
    """Asks its model, calls one tool, and (if given one) asks a helper agent."""

    def __init__(self, name: str, helper: AgentBase | None = None) -> None:
        super().__init__(name)
        self.model = ScriptedChatModel(["fine"], cycle=True, model_name="m")
        self.toolkit = Toolkit()
        self.toolkit.register_tool_function(double)
        self.helper = helper
        self.set_console_output_enabled(False)

    async def reply(self, msg: Msg | None = None) -> Msg:
        text = msg.get_text_content() if msg is not None else ""
        await collect(await self.model([{"role": "user", "content": text or ""}]))
        await self.toolkit.execute(ToolUseBlock(id="t", name="double", input={"x": 2}))
        if self.helper is not None:
            await self.helper(Msg(self.name, "help", "user"))
        return Msg(self.name, f"done {text}", "assistant")


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_long_run_keeps_memory_bounded_and_totals_exact(tmp_path: Path) -> None:
    calls, buffer = 2000, 200
    peak: dict[str, int] = {}
    async with experiment("long", runs_dir=tmp_path, buffer=buffer) as run, Runtime():
        agent = Worker("w")
        for i in range(calls):
            await agent(Msg("user", f"q{i}", "user"))  # nobody keeps it: nor its clock
            for name, held in run.buffered.items():
                peak[name] = max(peak.get(name, 0), held)
    # bounded by the buffer, not by the 2,000 calls (6,000 spans, 4,000 messages)
    assert peak["trace"] < buffer and peak["transcript"] < buffer
    assert peak["recording"] < buffer and peak["clocks"] < 50
    totals = json.loads((run.dir / "manifest.json").read_text())["totals"]
    counted = ("model_calls", "input_tokens", "output_tokens", "tool_calls", "messages")
    assert {k: totals[k] for k in counted} == {
        "model_calls": calls, "input_tokens": totals["input_tokens"], "output_tokens": calls,
        "tool_calls": calls, "messages": 2 * calls}
    # the cost ledger: one model, no round, one agent class, no price (a scripted model)
    assert [(r["agent_class"], r["calls"]) for r in totals["by_agent_class"]] == [
        ("Worker", calls)]
    assert [(r["provider"], r["model"], r["calls"], r["output_tokens"], r["cost_usd"])
            for r in totals["by_model"]] == [("scripted", "m", calls, calls, None)]
    assert [(r["round"], r["calls"]) for r in totals["by_round"]] == [(None, calls)]
    assert totals["cost_usd"] is None and totals["unpriced_calls"] == calls
    assert totals["input_tokens"] == calls  # one word in each request
    transcript = lines(run.dir / "transcript.jsonl")
    assert len(transcript) == 2 * calls
    assert [m["clock"] for m in transcript] == sorted(m["clock"] for m in transcript)
    assert [m["content"] for m in transcript[:4]] == ["q0", "done q0", "q1", "done q1"]
    assert len(lines(run.dir / "recording.jsonl")) == calls
    spans = lines(run.dir / "trace.jsonl")
    assert len(spans) == 1 + 3 * calls  # the run, then invoke_agent, chat, execute_tool
    assert sorted(p.name for p in run.dir.iterdir()) == [
        "manifest.json", "recording.jsonl", "trace.jsonl", "transcript.jsonl",
        "transcript.parquet"]


async def test_a_sampled_experiment_keeps_whole_traces_and_exact_totals(tmp_path: Path) -> None:
    calls = 200
    async with experiment("sampled", runs_dir=tmp_path, sampling=0.25) as run, Runtime():
        helper = Worker("helper")
        agent = Worker("w", helper)
        for i in range(calls):
            await agent(Msg("user", f"q{i}", "user"))
    manifest = json.loads((run.dir / "manifest.json").read_text())
    assert manifest["sampling"] == 0.25
    assert manifest["totals"]["model_calls"] == 2 * calls  # sampled or not, all counted
    assert manifest["totals"]["tool_calls"] == 2 * calls
    # the driver's question and both replies (a message an agent passes on to another is
    # transcribed as its speaker's reply, not twice)
    assert manifest["totals"]["messages"] == 3 * calls
    assert len(lines(run.dir / "transcript.jsonl")) == 3 * calls
    spans = lines(run.dir / "trace.jsonl")
    (root,) = [s for s in spans if s["name"] == "run sampled"]
    assert root["trace_id"] == manifest["trace_id"] and root["parent_id"] is None
    traces: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        if span is not root:
            traces.setdefault(span["trace_id"], []).append(span)
    assert 0 < len(traces) < calls  # a quarter of 200, give or take
    for trace in traces.values():
        ids = {s["span_id"] for s in trace}
        (top,) = [s for s in trace if s["parent_id"] is None]
        assert top["name"] == "invoke_agent w"
        assert top["links"] == [{"trace_id": root["trace_id"], "span_id": root["span_id"]}]
        assert all(s["parent_id"] is None or s["parent_id"] in ids for s in trace)
        assert sorted(s["name"] for s in trace) == sorted(
            ["invoke_agent w", "chat m", "execute_tool double", "invoke_agent helper",
             "chat m", "execute_tool double"])


async def test_sampling_outside_zero_to_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        async with experiment("bad", runs_dir=tmp_path, sampling=1.5):
            pass
