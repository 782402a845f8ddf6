import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from agentplex import HandlerError, Msg, Runtime, ScriptedChatModel
from agentplex.cluster import ModelActor, RemoteChatModel
from agentplex.cluster.lowlevel import schema_model
from agentplex.model import ChatModelBase, ChatResponse, ChatResult, collect
from tests.support.results import as_stream

pytestmark = pytest.mark.anyio


class Slow(ChatModelBase):
    """Counts how many requests it serves at the same time."""

    provider = "test"

    def __init__(self) -> None:
        super().__init__("slow")
        self.active = 0
        self.peak = 0

    async def _call(self, messages: Any, tools: Any = None, tool_choice: Any = None,
                       structured_model: Any = None, **kwargs: Any) -> ChatResult:
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.01)
        self.active -= 1
        return ChatResponse(content=[{"type": "text", "text": str(len(messages))}])


class Point(BaseModel):
    x: int
    y: int


async def test_many_agents_share_one_model_actor_concurrently() -> None:
    async with Runtime() as rt:
        slow = Slow()
        ref = await rt.spawn(ModelActor(slow), "llm")
        remote = RemoteChatModel(ref)
        outs = await asyncio.gather(*(remote([Msg("u", "hi", "user")] * i) for i in range(1, 21)))
        assert [o.text for o in outs if isinstance(o, ChatResponse)] == [
            str(i) for i in range(1, 21)]
        assert slow.peak == 20  # all requests reached the model together (it can batch)


async def test_streaming_crosses_the_actor_chunk_by_chunk() -> None:
    async with Runtime() as rt:
        await rt.spawn(ModelActor(ScriptedChatModel(["one two three"], stream=True)), "llm")
        remote = RemoteChatModel("llm", stream=True)
        chunks = [c async for c in as_stream(await remote([Msg("u", "go", "user")]))]
        assert [c.is_last for c in chunks] == [False, False, False, True]
        assert chunks[-1].text == "one two three"


async def test_structured_output_is_validated_on_both_sides() -> None:
    async with Runtime() as rt:
        await rt.spawn(ModelActor(ScriptedChatModel(['{"x": 1, "y": 2}', '{"x": "no"}'])),
                       "llm")
        remote = RemoteChatModel("llm")
        good = await collect(await remote([], structured_model=Point))
        assert good.metadata == {"x": 1, "y": 2}
        with pytest.raises(HandlerError, match="ValidationError"):
            await remote([], structured_model=Point)


async def test_replicas_are_balanced_by_outstanding_requests() -> None:
    async with Runtime() as rt:
        models = [Slow(), Slow()]
        refs = [await rt.spawn(ModelActor(m), f"llm-{i}") for i, m in enumerate(models)]
        remote = RemoteChatModel(refs)
        await asyncio.gather(*(remote([]) for _ in range(10)))
        served = [await r.call("describe") for r in refs]
        assert [s["served"] for s in served] == [5, 5]


async def test_model_actor_builds_its_model_from_a_string() -> None:
    async with Runtime() as rt:
        ref = await rt.spawn(ModelActor("scripted:house-model", script=["hello"]), "llm")
        out = await RemoteChatModel(ref)([Msg("u", "x", "user")])
        assert isinstance(out, ChatResponse) and out.text == "hello"
        assert (await ref.call("describe"))["model_name"] == "house-model"


def test_schema_model_validates_by_json_schema() -> None:
    cls = schema_model("Point", Point.model_json_schema())
    assert cls.model_json_schema() == Point.model_json_schema()
    assert cls.model_validate({"x": 1, "y": 2}).model_dump() == {"x": 1, "y": 2}
    with pytest.raises(ValidationError, match="does not match the schema of Point"):
        cls.model_validate({"x": "one"})


async def test_a_call_through_a_model_actor_counts_once_in_an_experiment(tmp_path: Any) -> None:
    import json

    from agentplex.tracing import experiment

    async with experiment("remote", runs_dir=tmp_path) as run, Runtime() as rt:
        host = await rt.spawn(ModelActor(ScriptedChatModel(["a b c"], cycle=True)), "m")
        model = RemoteChatModel(host)
        streaming = RemoteChatModel(host, stream=True)
        await model([{"role": "user", "content": "hi"}])
        await collect(await streaming([{"role": "user", "content": "hi"}]))
        direct = ScriptedChatModel(["x"])  # a call not through an actor counts as usual
        await direct([{"role": "user", "content": "hi"}])
    manifest = json.loads((run.dir / "manifest.json").read_text())
    assert manifest["totals"]["model_calls"] == 3  # not 5: the host does not count again
    recorded = (run.dir / "recording.jsonl").read_text().splitlines()
    assert len(recorded) == 3
    spans = [json.loads(line)["name"] for line in (run.dir / "trace.jsonl").read_text()
             .splitlines()]
    assert sum(name.startswith("chat") for name in spans) == 5  # the host still traces


class Endless(ChatModelBase):
    """Streams chunks until closed; records that its stream was closed. It keeps its
    stream, so only an explicit close (not its last reference going) ends it."""

    provider = "test"

    def __init__(self) -> None:
        super().__init__("endless")
        self.closed = False
        self.streams: list[AsyncGenerator[ChatResponse, None]] = []

    async def _call(self, messages: Any, tools: Any = None, tool_choice: Any = None,
                    structured_model: Any = None, **kwargs: Any) -> ChatResult:
        async def chunks() -> AsyncGenerator[ChatResponse, None]:
            try:
                for i in range(10_000):
                    yield ChatResponse(content=[{"type": "text", "text": str(i)}])
                    await asyncio.sleep(0)
            finally:
                self.closed = True

        self.streams.append(chunks())
        return self.streams[-1]


async def test_leaving_a_remote_stream_early_closes_the_models_stream() -> None:
    async with Runtime() as rt:
        endless = Endless()
        await rt.spawn(ModelActor(endless), "llm")
        stream = await RemoteChatModel("llm", stream=True, timeout=5)([Msg("u", "go", "user")])
        assert not isinstance(stream, ChatResponse)
        async for chunk in stream:
            if chunk.text.endswith("3"):
                break
        await stream.aclose()
        await asyncio.wait_for(rt.idle(), 5)
        assert endless.closed
