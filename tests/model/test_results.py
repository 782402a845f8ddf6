"""``collect`` and ``chunks_of``: consuming a call's result, one response or a stream."""

from collections.abc import AsyncGenerator

import pytest

from agentplex.message import Msg, TextBlock
from agentplex.model import ChatResponse, ChatUsage, ScriptedChatModel, chunks_of, collect

pytestmark = pytest.mark.anyio

HISTORY = [Msg("user", "hello there", "user")]


async def test_a_single_response_is_one_final_chunk() -> None:
    response = ChatResponse(content=[TextBlock(text="hi")], usage=ChatUsage(input_tokens=3))
    chunks = [c async for c in chunks_of(response)]
    assert len(chunks) == 1
    assert chunks[0].is_last and chunks[0].delta == response.content
    assert chunks[0].content == response.content and chunks[0].usage == response.usage
    assert response.delta == []  # the caller's response is left as it was
    assert await collect(response) is response


async def test_a_stream_passes_through_and_collects_to_its_last_chunk() -> None:
    model = ScriptedChatModel(["one two three"], stream=True, cycle=True)
    chunks = [c async for c in chunks_of(await model(HISTORY))]
    assert len(chunks) > 1 and chunks[-1].is_last and chunks[-1].text == "one two three"
    assert not any(c.is_last for c in chunks[:-1])
    assert (await collect(await model(HISTORY))).text == "one two three"


async def test_closing_the_chunks_closes_the_models_stream() -> None:
    closed = []

    async def stream() -> AsyncGenerator[ChatResponse, None]:
        try:
            for text in ("a", "a b", "a b c"):
                yield ChatResponse(content=[TextBlock(text=text)], is_last=text == "a b c")
        finally:
            closed.append(True)

    chunks = chunks_of(stream())
    assert (await anext(chunks)).text == "a"
    await chunks.aclose()
    assert closed == [True]
