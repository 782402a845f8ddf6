"""The recording of model answers: compact (fields at their default left out) yet replayed
as the very same responses, and none at all when a run asks for none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentplex.model import ChatResponse, ModelError, ScriptedChatModel, ScriptedOutput, collect
from agentplex.tracing import NoRecording, experiment
from agentplex.tracing.lowlevel import RunPart

pytestmark = pytest.mark.anyio

SCRIPT: list[ScriptedOutput] = ["one two", ChatResponse(content=[], metadata={"x": 1})]


def failing(messages: object, **_: object) -> str:
    raise ModelError("the provider is down", provider="scripted", model="failing")


async def calls() -> list[object]:
    """Plain, streamed and failing calls; what each returned (or its error's text)."""
    plain = ScriptedChatModel(SCRIPT, cycle=True)
    streamed = ScriptedChatModel(["three words here"], stream=True)
    broken = ScriptedChatModel(failing, model_name="failing")
    got: list[object] = []
    for model in (plain, plain):
        answer = await model([{"role": "user", "content": "hi"}])
        assert isinstance(answer, ChatResponse)
        got.append(answer.model_dump())
    chunks = []
    stream = await streamed([{"role": "user", "content": "hi"}])
    assert not isinstance(stream, ChatResponse)
    async for chunk in stream:
        chunks.append(chunk.model_dump())
    got.append(chunks)
    with pytest.raises(ModelError) as err:
        await broken([{"role": "user", "content": "hi"}])
    got.append(str(err.value))
    return got


async def test_the_recording_is_compact_and_replays_the_same_responses(tmp_path: Path) -> None:
    async with experiment("rec", seed=1, runs_dir=tmp_path / "a") as run:
        original = await calls()
    lines = (run.dir / "recording.jsonl").read_text().splitlines()
    assert len(lines) == 4
    first = json.loads(lines[0])["response"][0]
    assert set(first) == {"content", "id", "created_at", "usage", "delta", "finish_reason"}
    assert first["usage"] == {"input_tokens": 1, "output_tokens": 2}
    second = json.loads(lines[1])["response"][0]
    assert second["metadata"] == {"x": 1} and "delta" not in second  # no blocks: []
    streamed = json.loads(lines[2])["response"]
    assert [c.get("is_last", True) for c in streamed] == [False] * (len(streamed) - 1) + [True]
    assert json.loads(lines[3])["response"]["error"]["type"] == "ModelError"
    full = sum(len(ChatResponse.model_validate(c).model_dump_json())
               for line in lines[:3] for c in json.loads(line)["response"])
    assert sum(len(line) for line in lines[:3]) < full * 0.8
    async with experiment("rec", seed=1, runs_dir=tmp_path / "b", replay=run.dir) as again:
        replayed = await calls()
    assert replayed == original  # ids, times and all
    assert (again.dir / "transcript.jsonl").read_bytes() == \
        (run.dir / "transcript.jsonl").read_bytes()


async def test_a_run_without_recording_writes_none_and_cannot_be_replayed(
        tmp_path: Path) -> None:
    async with experiment("norec", seed=1, runs_dir=tmp_path, recording=False) as run:
        await calls()
    assert not (run.dir / "recording.jsonl").exists()
    manifest = json.loads((run.dir / "manifest.json").read_text())
    assert manifest["recording"] is False
    assert manifest["totals"]["model_calls"] == 3  # counted all the same (the failure: not)
    with pytest.raises(NoRecording, match="--no-recording"):
        async with experiment("again", runs_dir=tmp_path, replay=run.dir):
            pass
    with pytest.raises(FileNotFoundError):  # the built-in base callers caught before
        async with experiment("again", runs_dir=tmp_path, replay=tmp_path / "nothing"):
            pass


async def test_a_recording_past_its_limit_is_dropped_and_the_run_says_why(
        tmp_path: Path) -> None:
    async with experiment("small", seed=1, runs_dir=tmp_path, recording_limit=10_000) as run:
        await calls()  # a few hundred bytes: kept so far
        assert run.recording and run.recording_dropped is None
        run.sync()
        assert (run.dir / "recording.jsonl").stat().st_size > 0
        for k in range(200):  # 200 answers of about 100 bytes: past 10 kB
            run.record_response(f"key-{k}", {"content": "x" * 80})
        assert not run.recording and not (run.dir / "recording.jsonl").exists()
        assert run.recording_dropped is not None
        assert "passed 0.01 MB" in run.recording_dropped
        await calls()  # the run goes on, recording nothing
    assert not (run.dir / "recording.jsonl").exists()
    manifest = json.loads((run.dir / "manifest.json").read_text())
    assert manifest["recording"] is False
    assert manifest["recording_dropped"] == run.recording_dropped
    assert manifest["totals"]["model_calls"] == 6
    with pytest.raises(NoRecording, match=r"passed 0\.01 MB"):
        async with experiment("again", runs_dir=tmp_path, replay=run.dir):
            pass


async def test_a_recording_within_its_limit_is_kept_whole(tmp_path: Path) -> None:
    async with experiment("kept", seed=1, runs_dir=tmp_path, recording_limit=10_000) as run:
        await calls()
    assert len((run.dir / "recording.jsonl").read_text().splitlines()) == 4
    assert "recording_dropped" not in json.loads((run.dir / "manifest.json").read_text())


async def test_a_node_process_journals_no_answers_for_a_run_without_recording(
        tmp_path: Path) -> None:
    for recording, held in ((False, 0), (True, 1)):
        part = RunPart(json.dumps([str(tmp_path), None, recording]))
        try:
            part.record_response_json("k", "[]")
            assert part.held == held
        finally:
            part.write()
    old = RunPart(json.dumps([str(tmp_path), None]))  # a locator from before: records
    try:
        assert old.recording
    finally:
        old.write()


async def test_collect_of_a_replayed_stream_is_the_same(tmp_path: Path) -> None:
    model = ScriptedChatModel(["a b c"], stream=True)
    async with experiment("s", runs_dir=tmp_path / "a") as run:
        first = await collect(await model([{"role": "user", "content": "x"}]))
    async with experiment("s", runs_dir=tmp_path / "b", replay=run.dir):
        again = await collect(await ScriptedChatModel(["other"], stream=True)(
            [{"role": "user", "content": "x"}]))
    assert again.model_dump() == first.model_dump()
