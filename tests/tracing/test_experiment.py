import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest

from agentplex import (
    AgentBase,
    HandlerError,
    Msg,
    MsgHub,
    Runtime,
    ScriptedChatModel,
    fanout_pipeline,
)
from agentplex.model import ChatModelBase, collect
from agentplex.tracing import ReplayMissing, experiment, set_content_capture

pytestmark = pytest.mark.anyio


class Voter(AgentBase):
    def __init__(self, name: str, model: ChatModelBase) -> None:
        super().__init__(name)
        self.model = model
        self.memory: list[Msg] = []
        self.set_console_output_enabled(False)

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        if isinstance(msg, Msg):
            self.memory.append(msg)

    async def reply(self, msg: Msg | None = None) -> Msg:
        if msg is not None:
            self.memory.append(msg)
        history = [{"role": "user", "content": m.get_text_content() or ""} for m in self.memory]
        await asyncio.sleep(random.random() / 200)  # concurrent replies finish in any order
        response = await collect(await self.model(history))
        out = Msg(self.name, response.text, "assistant")
        self.memory.append(out)
        return out


def random_model(stream: bool = False) -> ScriptedChatModel:
    def answer(messages: list[dict[str, str]], **_: Any) -> str:
        return f"vote {random.randint(0, 10**6)} after {len(messages)}"
    return ScriptedChatModel(answer, stream=stream, model_name="random")


async def simulate(model: ChatModelBase, agents: int = 12, rounds: int = 3) -> None:
    async with Runtime():
        voters = [Voter(f"v{i:02d}", model) for i in range(agents)]
        async with MsgHub(voters, announcement=Msg("host", "vote!", "system"),
                          enable_auto_broadcast=False) as hub:
            for r in range(rounds):
                replies = await fanout_pipeline(voters, Msg("host", f"round {r}", "user"))
                await hub.broadcast(Msg("host", " ".join(m.get_text_content() or ""
                                                         for m in replies), "user"))


async def test_run_folder_holds_manifest_trace_transcript_and_recording(tmp_path: Path) -> None:
    async with experiment("vote", seed=5, config={"agents": 4}, runs_dir=tmp_path) as run:
        await simulate(random_model(), agents=4, rounds=2)
    files = {p.name for p in run.dir.iterdir()}
    assert files == {"manifest.json", "trace.jsonl", "transcript.jsonl", "transcript.parquet",
                     "recording.jsonl"}
    manifest = json.loads((run.dir / "manifest.json").read_text())
    assert manifest["run_id"] == run.id and manifest["seed"] == 5
    assert manifest["config"] == {"agents": 4}
    assert manifest["models"] == [{"provider": "scripted", "model": "random"}]
    assert manifest["totals"]["model_calls"] == 8
    assert manifest["packages"]["agentplex"]
    assert manifest["started_at"] <= manifest["ended_at"]
    spans = [json.loads(line) for line in (run.dir / "trace.jsonl").read_text().splitlines()]
    assert len({s["trace_id"] for s in spans}) == 1
    root = [s for s in spans if s["parent_id"] is None]
    assert [s["name"] for s in root] == ["run vote"]
    transcript = (run.dir / "transcript.jsonl").read_text().splitlines()
    assert len(transcript) == 1 + 2 * (1 + 4 + 1)  # announcement; per round: call, votes, tally


@pytest.mark.parametrize("stream", [False, True])
async def test_replay_of_a_concurrent_simulation_is_byte_identical(
    tmp_path: Path, stream: bool
) -> None:
    async with experiment("vote", seed=1, runs_dir=tmp_path / "a") as original:
        await simulate(random_model(stream))
    random.seed(12345)  # the replay would vote differently if the model were asked
    async with experiment("vote", seed=2, runs_dir=tmp_path / "b",
                          replay=original.dir) as replayed:
        await simulate(random_model(stream))
    first = (original.dir / "transcript.jsonl").read_bytes()
    again = (replayed.dir / "transcript.jsonl").read_bytes()
    assert first == again
    assert len(first.splitlines()) == 1 + 3 * (1 + 12 + 1)


async def test_replay_refuses_requests_the_recording_never_saw(tmp_path: Path) -> None:
    async with experiment("small", runs_dir=tmp_path / "a") as original:
        await simulate(random_model(), agents=2, rounds=1)
    with pytest.raises(HandlerError) as info:
        async with experiment("bigger", runs_dir=tmp_path / "b", replay=original.dir):
            await simulate(random_model(), agents=3, rounds=1)
    assert info.value.exc_type == ReplayMissing.__qualname__


async def test_content_capture_off_leaves_no_message_text_in_spans(tmp_path: Path) -> None:
    secret = "tangerine-42"
    model = ScriptedChatModel([f"the secret is {secret}"] * 2)

    async def one() -> None:
        async with Runtime():
            await Voter("v", model)(Msg("user", f"tell me {secret}", "user"))

    async with experiment("off", runs_dir=tmp_path, capture_content="off") as off:
        await one()
    assert secret not in (off.dir / "trace.jsonl").read_text()
    assert secret in (off.dir / "transcript.jsonl").read_text()

    async with experiment("masked", runs_dir=tmp_path,
                          capture_content=lambda text: text.replace(secret, "***")) as masked:
        await one()
    trace = (masked.dir / "trace.jsonl").read_text()
    assert secret not in trace and "***" in trace and "gen_ai.input.messages" in trace


async def test_content_capture_on_records_inputs_and_outputs(tmp_path: Path) -> None:
    set_content_capture("on")
    try:
        async with experiment("on", runs_dir=tmp_path) as run, Runtime():
            await Voter("v", ScriptedChatModel(["visible answer"]))(
                Msg("user", "visible question", "user"))
    finally:
        set_content_capture(None)
    spans = [json.loads(line) for line in (run.dir / "trace.jsonl").read_text().splitlines()]
    chat = next(s for s in spans if s["name"].startswith("chat"))
    assert "visible question" in chat["attributes"]["gen_ai.input.messages"]
    assert "visible answer" in chat["attributes"]["gen_ai.output.messages"]


async def test_experiments_do_not_nest(tmp_path: Path) -> None:
    async with experiment("outer", runs_dir=tmp_path):
        with pytest.raises(RuntimeError, match="already running"):
            async with experiment("inner", runs_dir=tmp_path):
                pass
