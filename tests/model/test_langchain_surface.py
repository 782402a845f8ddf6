"""The LangChain-style surface of every chat model, over the real chat-completions wire."""

from __future__ import annotations

from typing import Any, TypedDict

import pytest

from agentplex.message import Msg
from agentplex.model import (
    ChatResponse,
    ChatUsage,
    ConfigurableChatModel,
    StructuredOutputError,
    init_chat_model,
)
from agentplex.model.openai import OpenAIChatModel
from tests.support.model_inputs import WEATHER_TOOL, City
from tests.support.openai_wire import completion, stream_frames
from tests.support.provider_server import FakeServer
from tests.support.provider_wires import AnthropicWire

pytestmark = pytest.mark.anyio


def make(server: FakeServer, **kw: Any) -> OpenAIChatModel:
    return server.track(OpenAIChatModel("m", api_key="k", base_url=server.url + "/v1",
                                        max_retries=0, **kw))


class CityDict(TypedDict):
    """A city."""

    name: str
    population: int


CITY_SCHEMA = {"title": "CityInfo", "type": "object",
               "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
               "required": ["name", "population"]}


async def test_ainvoke_takes_a_string_and_role_pairs(server: FakeServer) -> None:
    server.json(completion("hi")).json(completion("ok"))
    model = make(server)
    assert (await model.ainvoke("hello")).text == "hi"
    assert server.last.json["messages"] == [{"role": "user", "content": "hello"}]
    await model.ainvoke([("system", "Be terse."), ("human", "hello"), ("ai", "hi"),
                         Msg("user", "again", "user")], stop=["\n"])
    body = server.last.json
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["stop"] == ["\n"]
    with pytest.raises(ValueError, match="unknown role"):
        await model.ainvoke([("robot", "beep")])


async def test_astream_streams_whatever_the_model_setting(server: FakeServer) -> None:
    server.stream(stream_frames(["Hel", "lo"]))
    chunks = [c async for c in make(server).astream("hi")]
    assert server.last.json["stream"] is True
    assert chunks[-1].text == "Hello" and chunks[-1].is_last and len(chunks) >= 3


async def test_abatch_and_batch_as_completed(server: FakeServer) -> None:
    model = make(server)
    for text in ("a", "b", "c"):
        server.json(completion(text))
    results = await model.abatch(["1", "2", "3"], {"max_concurrency": 1})
    assert [r.text for r in results if isinstance(r, ChatResponse)] == ["a", "b", "c"]
    server.json(completion("x")).json(completion("y"))
    seen = {i: r.text async for i, r in model.batch_as_completed(["1", "2"])
            if isinstance(r, ChatResponse)}
    assert sorted(seen) == [0, 1] and sorted(seen.values()) == ["x", "y"]
    server.json(completion("z"))  # the second one gets the server's unscripted 500
    pairs = [p async for p in model.batch_as_completed(["1", "2"], {"max_concurrency": 1},
                                                       return_exceptions=True)]
    assert sorted(type(r).__name__ for _, r in pairs) == ["ChatResponse", "ProviderError"]


async def test_bind_tools(server: FakeServer) -> None:
    server.json(completion(None, tool_calls=[("c1", "City", {"name": "A", "population": 1})]))
    bound = make(server).bind_tools([City, WEATHER_TOOL], tool_choice="any")
    response = await bound.ainvoke("which city?")
    assert response.tool_calls[0].input == {"name": "A", "population": 1}
    body = server.last.json
    assert [t["function"]["name"] for t in body["tools"]] == ["City", "get_weather"]
    assert body["tool_choice"] == "required"
    server.json(completion("ok"))
    await bound.bind(temperature=0.3).ainvoke("again")
    assert server.last.json["temperature"] == 0.3 and len(server.last.json["tools"]) == 2


@pytest.mark.parametrize("schema", [City, CityDict, CITY_SCHEMA], ids=["pydantic", "typeddict",
                                                                      "json-schema"])
async def test_with_structured_output(server: FakeServer, schema: Any) -> None:
    server.json(completion('{"name": "Oslo", "population": 7}'))
    parsed = await make(server).with_structured_output(schema).ainvoke("Oslo?")
    if schema is City:
        assert parsed == City(name="Oslo", population=7)
    else:
        assert parsed == {"name": "Oslo", "population": 7}
    fmt = server.last.json["response_format"]["json_schema"]
    assert set(fmt["schema"]["properties"]) == {"name", "population"}
    if schema is CITY_SCHEMA:
        assert fmt["name"] == "CityInfo"


async def test_json_schema_output_is_enforced(server: FakeServer) -> None:
    server.json(completion('{"name": "Oslo", "population": "many"}'))
    server.json(completion('{"name": "Oslo"}'))
    structured = make(server).with_structured_output(CITY_SCHEMA, include_raw=True,
                                                     method="function_calling")
    with pytest.raises(StructuredOutputError):
        await make(server).with_structured_output(CITY_SCHEMA).ainvoke("Oslo?")
    server.json(completion(None, tool_calls=[("c", "CityInfo", {"name": "B"})]))
    server.json(completion(None, tool_calls=[("c", "CityInfo", {"name": "B"})]))
    out = await structured.ainvoke("Oslo?")
    assert out["parsed"] is None and isinstance(out["parsing_error"], StructuredOutputError)
    assert "population" in str(out["parsing_error"])
    assert server.last.json["tool_choice"]["function"]["name"] == "CityInfo"
    server.json(completion(None, tool_calls=[("c", "CityInfo", {"name": "C", "population": 3})]))
    out = await structured.ainvoke("Oslo?")
    assert out["parsed"] == {"name": "C", "population": 3}
    assert isinstance(out["raw"], ChatResponse) and out["parsing_error"] is None


async def test_configurable_fields(server: FakeServer) -> None:
    server.json(completion("a")).json(completion("b"))
    model = make(server, temperature=0.9).configurable_fields(temperature="temp")
    await model.ainvoke("hi", {"configurable": {"temp": 0.1}})
    assert server.last.json["temperature"] == 0.1
    await model.with_config(configurable={"other": 1}).ainvoke("hi")
    assert server.last.json["temperature"] == 0.9


async def test_a_model_chosen_per_call(server: FakeServer) -> None:
    model = init_chat_model(configurable_fields="any", api_key="k", temperature=0.5)
    assert isinstance(model, ConfigurableChatModel)
    server.closers.append(model.aclose)
    server.json(completion("from openai"))
    AnthropicWire().text(server, "from anthropic")
    first = await model.ainvoke("hi", {"configurable": {
        "model": "openai:gpt-x", "base_url": server.url + "/v1", "max_retries": 0}})
    assert first.text == "from openai" and server.last.json["temperature"] == 0.5
    second = await model.ainvoke("hi", {"configurable": {
        "model": "claude-x", "model_provider": "anthropic", "base_url": server.url,
        "temperature": 0.0}})
    assert second.text == "from anthropic" and server.last.path == "/v1/messages"
    assert server.last.json["temperature"] == 0.0
    with pytest.raises(ValueError, match="no model configured"):
        await model.ainvoke("hi")


async def test_usage_details(server: FakeServer) -> None:
    body = completion("hi", usage=(100, 30))
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 64}
    body["usage"]["completion_tokens_details"] = {"reasoning_tokens": 20}
    server.json(body)
    usage = (await make(server).ainvoke("hi")).usage
    assert usage is not None
    assert (usage.cached_input_tokens, usage.reasoning_tokens, usage.total_tokens) == (
        64, 20, 130)
    wire = AnthropicWire()
    answer = wire.message([{"type": "text", "text": "hi"}], usage=(10, 5))
    answer["usage"].update(cache_read_input_tokens=200, cache_creation_input_tokens=50)
    server.json(answer)
    response = await wire.make(server).ainvoke("hi")
    assert response.usage_metadata == {
        "input_tokens": 260, "output_tokens": 5, "total_tokens": 265,
        "input_token_details": {"cache_read": 200, "cache_creation": 50},
        "output_token_details": {"reasoning": 0}}


def test_usage_sums_keep_everything() -> None:
    a = ChatUsage(input_tokens=1, output_tokens=2, cached_input_tokens=1,
                  metadata={"provider": "x", "a": 1})
    b = ChatUsage(input_tokens=3, output_tokens=4, reasoning_tokens=2, metadata={"b": 2})
    total = a + b
    assert (total.input_tokens, total.output_tokens, total.cached_input_tokens,
            total.reasoning_tokens) == (4, 6, 1, 2)
    assert total.metadata == {"provider": "x", "a": 1, "b": 2}
