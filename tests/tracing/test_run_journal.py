"""A node's part of a run is journaled in batches, and the run that takes it in gets the
same transcript, recording and totals as if it had seen every event itself."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agentplex.tracing import _run
from agentplex.tracing._run import Run, RunPart, flush_journal

pytestmark = pytest.mark.anyio


class CountingFile:
    """A file that counts the calls that write to it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return int(self.inner.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def play(run: Run, events: int) -> None:
    """Messages, model calls, tool calls and responses, some with awkward text."""
    for i in range(events):
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
    run.model_used("scripted", "players")


def folder(run: Run) -> tuple[bytes, bytes, dict[str, Any]]:
    manifest = json.loads((run.dir / "manifest.json").read_text())
    return ((run.dir / "transcript.jsonl").read_bytes(),
            (run.dir / "recording.jsonl").read_bytes(),
            {**manifest["totals"], "models": manifest["models"]})


async def test_a_journaled_part_gives_the_run_what_it_would_have_seen(tmp_path: Path) -> None:
    events = 3_000
    alone = Run("alone", tmp_path / "a", 0, {}, None, buffer=500)
    play(alone, events)
    alone.write()

    merged = Run("merged", tmp_path / "b", 0, {}, None, buffer=500)
    part = RunPart(merged.locator)
    journal = part._journal = CountingFile(part._journal)  # type: ignore[assignment]
    play(part, events)
    assert journal.writes < events / 500  # in batches (here: one per JOURNAL_BATCH lines)
    await asyncio.sleep(0)  # the event loop's next turn writes the rest
    waiting = journal.writes
    assert part._pending == []
    part.write()
    assert journal.writes == waiting  # nothing was left to write
    merged.write()

    assert folder(merged) == folder(alone)
    transcript, _, totals = folder(merged)
    assert len(transcript.splitlines()) == totals["messages"] == events
    assert totals["model_calls"] == events and totals["tool_calls"] == events // 5
    assert {r["agent_class"]: r["calls"] for r in totals["by_agent_class"]} == {
        "Player0": events // 2, "Player1": events // 2}  # the cost ledger came in too
    assert not (merged.dir / "parts").exists()


async def test_flush_journal_writes_before_an_answer_leaves(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    run = Run("r", tmp_path, 0, {}, None)
    part = RunPart(run.locator)
    monkeypatch.setattr(_run, "_active", part)
    part.said("agent", "m1", {"name": "agent", "role": "assistant", "content": "hi"})
    part.count(1, 1)
    path = next((run.dir / "parts").iterdir())
    assert path.read_text() == ""  # waiting for the event loop's next turn
    flush_journal()  # what the bus calls before it sends answers
    written = path.read_text().splitlines()
    assert [line.split("\t")[0] for line in written] == ["S", "C"]
    assert written[1] == "C\t1\t1\t1\t0"
    part.write()


def test_outside_an_event_loop_each_event_is_written_at_once(tmp_path: Path) -> None:
    run = Run("r", tmp_path, 0, {}, None)
    part = RunPart(run.locator)
    part.count_tool_call()
    path = next((run.dir / "parts").iterdir())
    assert path.read_text() == "C\t0\t0\t0\t1\n"
    part.write()
    run.write()
    assert json.loads((run.dir / "manifest.json").read_text())["totals"]["tool_calls"] == 1
