import itertools
import json

import pytest
from pydantic import BaseModel, ValidationError

from agentplex.message import Block, Msg, TextBlock, ThinkingBlock, ToolUseBlock
from agentplex.model import (
    ChatModelBase,
    ChatResponse,
    ScriptedChatModel,
    collect,
    init_chat_model,
)
from tests.support.results import as_stream

pytestmark = pytest.mark.anyio


async def test_replies_in_script_order_then_runs_out() -> None:
    model = ScriptedChatModel(["one", "two"])
    history = [Msg("u", "hello there", "user")]
    first = await model(history)
    assert isinstance(first, ChatResponse)
    assert first.text == "one" and first.is_last
    assert first.usage is not None and first.usage.input_tokens == 2
    assert (await collect(await model(history))).text == "two"
    with pytest.raises(IndexError, match="ran out of replies after 2 calls"):
        await model(history)


async def test_cycle_and_function_scripts() -> None:
    model = ScriptedChatModel(["a", "b"], cycle=True)
    texts = [(await collect(await model([]))).text for _ in range(3)]
    assert texts == ["a", "b", "a"]

    async def echo(messages: list[dict[str, str]], **kwargs: object) -> str:
        return messages[-1]["content"].upper()

    fn_model = ScriptedChatModel(echo)
    assert (await collect(await fn_model([{"role": "user", "content": "hey"}]))).text == "HEY"
    assert fn_model.calls[0]["messages"] == [{"role": "user", "content": "hey"}]


async def test_streaming_contract() -> None:
    reply: list[Block] = [ThinkingBlock(thinking="let me think"),
                          TextBlock(text="the answer is 42"),
                          ToolUseBlock(id="c1", name="lookup", input={"q": "life", "n": 3})]
    model = ScriptedChatModel([reply], stream=True)
    chunks = [c async for c in as_stream(await model([]))]
    assert [c.is_last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    final = chunks[-1]
    assert final.thinking == "let me think" and final.text == "the answer is 42"
    assert final.tool_calls[0].input == {"q": "life", "n": 3}
    # Each chunk's content is everything so far; its delta is only what is new.
    texts = "".join(b.text for c in chunks for b in c.delta if isinstance(b, TextBlock))
    assert texts == "the answer is 42"
    for before, after in itertools.pairwise(chunks):
        assert len(after.content) >= len(before.content)
    partial = [c for c in chunks if c.tool_calls and not c.is_last]
    assert partial and all(c.tool_calls[0].input == {} for c in partial)
    assert json.loads(final.tool_calls[0].raw_input or "") == {"q": "life", "n": 3}
    assert final.usage is not None and final.finish_reason == "tool_calls"


async def test_structured_output_is_validated() -> None:
    class Point(BaseModel):
        x: int
        y: int

    model = ScriptedChatModel(['{"x": 1, "y": 2}', '{"x": "no"}'])
    good = await collect(await model([], structured_model=Point))
    assert good.metadata == {"x": 1, "y": 2}
    with pytest.raises(ValidationError):
        await model([], structured_model=Point)


async def test_init_chat_model_and_batch() -> None:
    model = init_chat_model("scripted:tiny", script=["x", "y", "z"])
    assert isinstance(model, ChatModelBase) and model.model_name == "tiny"
    out = await model.batch([[Msg("u", "1", "user")]] * 3, max_concurrency=2)
    assert sorted(r.text for r in out if isinstance(r, ChatResponse)) == ["x", "y", "z"]
    with pytest.raises(ValueError, match="names no provider"):
        init_chat_model("no-provider")
    with pytest.raises(ValueError, match="unknown model provider"):
        init_chat_model("nope:model")


async def test_batch_can_return_exceptions() -> None:
    model = ScriptedChatModel(["only one"])
    out = await model.batch([[], []], max_concurrency=1, return_exceptions=True)
    assert isinstance(out[0], ChatResponse) and isinstance(out[1], IndexError)
