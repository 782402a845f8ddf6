"""A node's part of a run is a journal that travels to the run's process in batches, and
the run that takes it in gets the same transcript, recording, totals and spans as if it
had seen every event itself."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agentplex.tracing import _run
from agentplex.tracing._run import JOURNAL_BATCH, Run, RunPart, set_journal_shipper
from agentplex.tracing.lowlevel import agent_span

pytestmark = pytest.mark.anyio


def play(run: Run, events: int) -> None:
    """Messages, model calls (with their cost ledger), tool calls and responses, some with
    awkward text."""
    play_range(run, 0, events)
    run.model_used("scripted", "players")
    run.model_used("transformers", "SmolLM2", {"weights": "int4"})
    run.model_used("transformers", "SmolLM2", {"weights": "float32"})  # another entry


def folder(run: Run) -> tuple[bytes, bytes, dict[str, Any]]:
    manifest = json.loads((run.dir / "manifest.json").read_text())
    return ((run.dir / "transcript.jsonl").read_bytes(),
            (run.dir / "recording.jsonl").read_bytes(),
            {**manifest["totals"], "models": manifest["models"]})


class Shipments:
    """Stands where the bus takes a part's journal: hands each batch to the run."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.sizes: list[int] = []

    def __call__(self, text: str) -> None:
        self.sizes.append(text.count("\n") + 1)
        self.run.take_in(text)


async def test_a_journal_gives_the_run_what_it_would_have_seen(tmp_path: Path) -> None:
    events = 3_000
    alone = Run("alone", tmp_path / "a", 0, {}, None, buffer=500)
    play(alone, events)
    alone.write()

    merged = Run("merged", tmp_path / "b", 0, {}, None, buffer=500)
    ship = Shipments(merged)
    before = set_journal_shipper(ship)
    try:
        part = RunPart(merged.locator)
        most = 0
        for start in range(0, events, 100):  # the events of many turns of the event loop
            play_range(part, start, 100)
            most = max(most, part.held)
            await asyncio.sleep(0)
        part.model_used("scripted", "players")
        part.model_used("transformers", "SmolLM2", {"weights": "int4"})
        part.model_used("transformers", "SmolLM2", {"weights": "float32"})
        assert most < JOURNAL_BATCH + 400  # a part holds a batch and one turn's events
        assert len(ship.sizes) >= 1  # sent on in batches as they filled
        assert all(size >= JOURNAL_BATCH for size in ship.sizes)
        rest = part.take()  # what the bus sends with the next answer, or when asked
        assert rest is not None
        merged.take_in(rest)
        assert part.take() is None and part.held == 0
        part.write()
    finally:
        set_journal_shipper(before)
    merged.write()

    assert folder(merged) == folder(alone)
    transcript, _, totals = folder(merged)
    assert {m.get("weights") for m in totals["models"]} == {None, "int4", "float32"}
    assert len(transcript.splitlines()) == totals["messages"] == events
    assert totals["model_calls"] == events and totals["tool_calls"] == events // 5
    assert {r["agent_class"]: r["calls"] for r in totals["by_agent_class"]} == {
        "Player0": events // 2, "Player1": events // 2}  # the cost ledger came in too
    assert sorted(p.name for p in merged.dir.iterdir()) == [
        "manifest.json", "recording.jsonl", "transcript.jsonl",
        "transcript.parquet"]  # nothing else written


def play_range(run: Run, start: int, n: int) -> None:
    for i in range(start, start + n):
        speaker = f"agent-{i % 7}"
        run.said(speaker, f"m{i}", {"name": speaker, "role": "assistant",
                                    "content": f"reply {i}: ünï\tcode \"quoted\"\n",
                                    "metadata": {"guess": i % 67}})
        run.count(10 + i % 3, 2)
        run.charge("scripted", "players", i % 4 or None, f"Player{i % 2}", 10 + i % 3, 2,
                   i % 2, 0, 0.5, 0.0)
        run.record_response(f"{i:032x}", [{"text": f"é {i}", "n": i}])
        if i % 5 == 0:
            run.count_tool_call()


async def test_counts_wait_for_the_next_batch(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run("r", tmp_path, 0, {}, None)
    part = RunPart(run.locator)
    monkeypatch.setattr(_run, "_active", part)
    part.said("agent", "m1", {"name": "agent", "role": "assistant", "content": "hi"})
    part.count(1, 1)
    part.count_tool_call()
    text = part.take()
    assert text is not None
    lines = text.split("\n")
    assert [line.split("\t")[0] for line in lines] == ["S", "C"]
    assert lines[1] == "C\t1\t1\t1\t1"
    part.write()
    assert not (tmp_path / run.id / "parts").exists()  # a part writes nothing itself


async def test_a_parts_spans_join_the_runs_trace(tmp_path: Path) -> None:
    """Spans a following process records travel in its journal into ``trace.jsonl``."""
    from agentplex.tracing import experiment

    async with experiment("spans", runs_dir=tmp_path) as run:
        part = RunPart(run.locator)  # as a node following the run would have
        try:
            with agent_span("far", "far-id"):
                pass
            text = part.take()
        finally:
            part.write()
        assert text is not None and text.startswith("T\t")
        run.take_in(text)
    spans = [json.loads(line) for line in (run.dir / "trace.jsonl").read_text().splitlines()]
    names = sorted(s["name"] for s in spans)
    # the span went into the part's journal (and the run's own dispatcher saw it too)
    assert names.count("invoke_agent far") == 2
    assert "run spans" in names
