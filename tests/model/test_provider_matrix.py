"""The same behaviour matrix run against every provider's wire protocol on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentplex.message import Msg, TextBlock, ThinkingBlock
from agentplex.model import (
    AuthenticationError,
    ChatResponse,
    ModelTimeoutError,
    ProviderError,
    RateLimitError,
    StructuredOutputError,
    UnsupportedOptionError,
)
from tests.support.model_inputs import (
    CLOCK_TOOL,
    PNG_B64,
    WEATHER_TOOL,
    City,
    history,
    image_history,
)
from tests.support.provider_server import FakeServer
from tests.support.provider_wires import WIRES, Wire
from tests.support.results import as_response, as_stream

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)]

NO_TOOLS = "no tools sent"
"""A tool_choice a provider emulates by leaving the tools out of the request."""


async def chunks(result: Any) -> list[ChatResponse]:
    return [c async for c in result]


async def test_text(server: FakeServer, wire: Wire) -> None:
    wire.text(server, "Hello!", usage=(12, 5))
    response = await wire.make(server)(history())
    assert isinstance(response, ChatResponse)
    assert response.text == "Hello!"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 5)
    assert response.finish_reason
    assert wire.sent_texts(server.last.json) == [("system", "You are terse."),
                                                 ("user", "Hi there")]


async def test_request_paths(server: FakeServer, wire: Wire) -> None:
    wire.text(server, "a")
    wire.stream_text(server, ["b"])
    await wire.make(server)(history())
    await chunks(await wire.make(server, stream=True)(history()))
    assert (server.requests[0].path, server.requests[1].path) == wire.paths
    assert all(r.method == "POST" for r in server.requests)


async def test_streaming_text(server: FakeServer, wire: Wire) -> None:
    wire.stream_text(server, ["Hel", "lo", "!"], usage=(3, 4))
    out = await chunks(await wire.make(server, stream=True)(history()))
    texts = [c.text for c in out]
    assert texts[-1] == "Hello!" and "Hel" in texts and "Hello" in texts
    assert "".join(d.text for c in out for d in c.delta if isinstance(d, TextBlock)) == "Hello!"
    assert [c.is_last for c in out] == [False] * (len(out) - 1) + [True]
    assert out[-1].usage is not None
    assert (out[-1].usage.input_tokens, out[-1].usage.output_tokens) == (3, 4)


async def test_tool_call(server: FakeServer, wire: Wire) -> None:
    wire.tool_call(server, ("call_1", "get_weather", {"city": "Paris"}))
    response = await wire.make(server)(history(), tools=[WEATHER_TOOL, CLOCK_TOOL])
    assert isinstance(response, ChatResponse)
    [call] = response.tool_calls
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"})
    assert call.id
    assert wire.sent_tool_names(server.last.json) == ["get_weather", "get_time"]


async def test_streamed_tool_call(server: FakeServer, wire: Wire) -> None:
    wire.stream_tool_call(server, ("call_2", "get_weather", {"city": "Oslo"}))
    out = await chunks(await wire.make(server, stream=True)(history(), tools=[WEATHER_TOOL]))
    [call] = out[-1].tool_calls
    assert (call.name, call.input) == ("get_weather", {"city": "Oslo"})
    if wire.streams_tool_arguments:
        assert any(c.tool_calls and c.tool_calls[0].input == {} for c in out[:-1])


@pytest.mark.parametrize("choice", ["auto", "none", "required", "get_time"])
async def test_tool_choice(server: FakeServer, wire: Wire, choice: str) -> None:
    model = wire.make(server)
    if choice in wire.unsupported_choices:
        with pytest.raises(UnsupportedOptionError, match=wire.name):
            await model(history(), tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice=choice)
        assert server.requests == []
        return
    wire.text(server, "ok")
    await model(history(), tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice=choice)
    expected = wire.tool_choices[choice]
    if expected == NO_TOOLS:
        assert wire.sent_tool_names(server.last.json) == []
    else:
        assert wire.sent_tool_choice(server.last.json) == expected


async def test_unknown_tool_name(server: FakeServer, wire: Wire) -> None:
    with pytest.raises(UnsupportedOptionError, match="get_moon"):
        await wire.make(server)(history(), tools=[WEATHER_TOOL], tool_choice="get_moon")


async def test_structured_output(server: FakeServer, wire: Wire) -> None:
    wire.structured(server, '{"name": "Paris", "population": 2100000}')
    response = await wire.make(server)(history(), structured_model=City)
    assert isinstance(response, ChatResponse)
    assert response.metadata == {"name": "Paris", "population": 2100000}
    schema = wire.sent_schema(server.last.json)
    assert schema is not None and set(schema["properties"]) == {"name", "population"}


async def test_structured_output_repaired(server: FakeServer, wire: Wire) -> None:
    wire.structured(server, '{"name": "Paris"}')
    wire.structured(server, '{"name": "Paris", "population": 3}')
    response = await wire.make(server)(history(), structured_model=City)
    assert isinstance(response, ChatResponse)
    assert response.metadata == {"name": "Paris", "population": 3}
    texts = wire.sent_texts(server.last.json)
    assert any("population" in text and "not valid" in text for _, text in texts)


async def test_structured_output_invalid_twice(server: FakeServer, wire: Wire) -> None:
    wire.structured(server, '{"name": "Paris"}')
    wire.structured(server, '{"population": "many"}')
    with pytest.raises(StructuredOutputError) as info:
        await wire.make(server)(history(), structured_model=City)
    assert '"many"' in info.value.raw and info.value.provider == wire.name


async def test_thinking(server: FakeServer, wire: Wire) -> None:
    wire.text(server, "42", thinking="Six times seven.")
    response = await wire.make(server)(history())
    assert isinstance(response, ChatResponse)
    assert isinstance(response.content[0], ThinkingBlock)
    assert response.thinking == "Six times seven." and response.text == "42"
    wire.stream_text(server, ["4", "2"], thinking=["Six ", "times seven."])
    out = await chunks(await wire.make(server, stream=True)(history()))
    assert out[-1].thinking == "Six times seven." and out[-1].text == "42"


async def test_image_input(server: FakeServer, wire: Wire) -> None:
    wire.text(server, "A pixel.")
    await wire.make(server)(image_history())
    assert wire.sent_image(server.last.json) == PNG_B64


async def test_several_speakers(server: FakeServer, wire: Wire) -> None:
    wire.text(server, "Paper wins.")
    await wire.make(server)([Msg("alice", "rock", "user"), Msg("bob", "paper", "user"),
                             Msg("judge", "Hmm.", "assistant"), Msg("carol", "who wins?", "user")])
    texts = [text for _, text in wire.sent_texts(server.last.json)]
    assert texts == ["alice: rock", "bob: paper", "judge: Hmm.", "carol: who wins?"] or texts == [
        "alice: rock\nbob: paper", "judge: Hmm.", "carol: who wins?"]


async def test_rate_limit_with_retry_after(server: FakeServer, wire: Wire) -> None:
    wire.error(server, 429, "slow down", {"retry-after": "1.5"})
    wire.text(server, "finally")
    model = wire.make(server, retries=2)
    assert as_response(await model(history())).text == "finally"
    assert wire.sleeps.delays == ([1.5] if wire.retry_after_supported
                                  else wire.sleeps.delays[:1])
    assert len(wire.sleeps.delays) == 1
    wire.error(server, 429, "slow down", {"retry-after": "2"})
    with pytest.raises(RateLimitError, match=rf"\[{wire.name}:{wire.model_name}\]"):
        await wire.make(server)(history())


async def test_server_error_then_success(server: FakeServer, wire: Wire) -> None:
    wire.error(server, 500, "boom")
    wire.text(server, "ok")
    assert as_response(await wire.make(server, retries=1)(history())).text == "ok"
    assert len(server.requests) == 2


async def test_authentication_error(server: FakeServer, wire: Wire) -> None:
    wire.error(server, 401, "bad key")
    with pytest.raises(AuthenticationError):
        await wire.make(server, retries=2)(history())
    assert len(server.requests) == 1


async def test_truncated_stream(server: FakeServer, wire: Wire) -> None:
    wire.stream_text(server, ["Hel", "lo"], truncate=True)
    with pytest.raises(ProviderError, match=wire.name):
        await chunks(await wire.make(server, stream=True)(history()))


async def test_malformed_json(server: FakeServer, wire: Wire) -> None:
    wire.malformed(server)
    with pytest.raises(ProviderError, match=wire.name):
        await wire.make(server)(history())


async def test_timeout(server: FakeServer, wire: Wire) -> None:
    server.hang()
    with pytest.raises(ModelTimeoutError, match=wire.name):
        await wire.make(server, timeout=0.3)(history())


async def test_closing_a_stream_closes_the_connection(server: FakeServer, wire: Wire) -> None:
    if not wire.closes_abandoned_streams:
        pytest.skip(f"{wire.name}'s SDK keeps an abandoned stream open (see docs/providers.md)")
    server.stall_instead_of_truncating = True
    wire.stream_text(server, ["first", "second"], truncate=True)
    stream = as_stream(await wire.make(server, stream=True)(history()))
    await stream.__anext__()
    await stream.aclose()
    await asyncio.wait_for(server.disconnected.wait(), 5)
