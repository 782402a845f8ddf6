"""OpenAIChatModel against a loopback server speaking the chat-completions wire protocol."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agentplex.message import Msg, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from agentplex.model import (
    AuthenticationError,
    ChatResponse,
    ModelTimeoutError,
    ProviderError,
    RateLimitError,
    StructuredOutputError,
    UnsupportedOptionError,
    init_chat_model,
)
from agentplex.model.openai import OpenAIChatModel
from tests.support.model_inputs import (
    CLOCK_TOOL,
    PNG_B64,
    WEATHER_TOOL,
    City,
    history,
    image_history,
    policy,
)
from tests.support.openai_wire import (
    completion,
    error_body,
    llamacpp_validation,
    stream_frames,
)
from tests.support.provider_server import FakeServer
from tests.support.results import as_response, as_stream

pytestmark = pytest.mark.anyio


def make(server: FakeServer, stream: bool = False, retries: int = 0, **kw: Any
         ) -> OpenAIChatModel:
    retry_policy, _ = policy(retries)
    return server.track(OpenAIChatModel("gpt-4o-mini", api_key="sk-test", stream=stream,
                                        base_url=server.url + "/v1",
                                        retry_policy=retry_policy, **kw))


async def chunks(result: Any) -> list[ChatResponse]:
    return [c async for c in result]


async def test_text_request_and_response(server: FakeServer) -> None:
    server.json(completion("Hello!", usage=(12, 5)))
    response = await make(server, generate_kwargs={"temperature": 0.2})(history())
    assert isinstance(response, ChatResponse)
    assert response.text == "Hello!"
    assert response.finish_reason == "stop"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 5)
    req = server.last
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.json == {
        "model": "gpt-4o-mini", "temperature": 0.2,
        "messages": [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": "Hi there"}],
    }


async def test_streaming_text(server: FakeServer) -> None:
    server.stream(stream_frames(["Hel", "lo", "!"], usage=(3, 4)))
    out = await chunks(await make(server, stream=True)(history()))
    assert [c.text for c in out] == ["Hel", "Hello", "Hello!", "Hello!"]
    assert [c.delta[0].text for c in out[:3]] == ["Hel", "lo", "!"]  # type: ignore[union-attr]
    assert [c.is_last for c in out] == [False, False, False, True]
    assert out[-1].usage is not None and out[-1].usage.output_tokens == 4
    body = server.last.json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_tool_call(server: FakeServer) -> None:
    server.json(completion(None, tool_calls=[("call_1", "get_weather", {"city": "Paris"})]))
    response = await make(server)(history(), tools=[WEATHER_TOOL])
    assert isinstance(response, ChatResponse)
    assert response.tool_calls == [ToolUseBlock(id="call_1", name="get_weather",
                                                input={"city": "Paris"},
                                                raw_input='{"city": "Paris"}')]
    assert response.finish_reason == "tool_calls"
    assert server.last.json["tools"] == [WEATHER_TOOL]
    assert "tool_choice" not in server.last.json


async def test_streamed_tool_call(server: FakeServer) -> None:
    server.stream(stream_frames(tool=("call_9", "get_weather", ['{"ci', 'ty": "Os', 'lo"}'])))
    out = await chunks(await make(server, stream=True)(history(), tools=[WEATHER_TOOL]))
    assert out[1].tool_calls[0].input == {}
    assert out[1].tool_calls[0].raw_input == '{"ci'
    assert out[-1].tool_calls == [ToolUseBlock(id="call_9", name="get_weather",
                                               input={"city": "Oslo"},
                                               raw_input='{"city": "Oslo"}')]
    assert out[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("choice", "wire"),
    [("auto", "auto"), ("none", "none"), ("required", "required"), ("any", "required"),
     ("get_time", {"type": "function", "function": {"name": "get_time"}})],
)
async def test_tool_choice(server: FakeServer, choice: str, wire: Any) -> None:
    server.json(completion("ok"))
    await make(server)(history(), tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice=choice)
    assert server.last.json["tool_choice"] == wire


async def test_tool_choice_errors_name_provider_and_option(server: FakeServer) -> None:
    model = make(server)
    with pytest.raises(UnsupportedOptionError, match=r"\[openai:gpt-4o-mini\].*'get_moon'"):
        await model(history(), tools=[WEATHER_TOOL], tool_choice="get_moon")
    with pytest.raises(UnsupportedOptionError, match="needs tools"):
        await model(history(), tool_choice="required")
    assert server.requests == []


async def test_structured_output_native(server: FakeServer) -> None:
    server.json(completion('{"name": "Paris", "population": 2100000}'))
    response = await make(server)(history(), structured_model=City)
    assert isinstance(response, ChatResponse)
    assert response.metadata == {"name": "Paris", "population": 2100000}
    fmt = server.last.json["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "City"
    assert fmt["json_schema"]["schema"] == City.model_json_schema()


async def test_structured_output_with_raw_control_characters(server: FakeServer) -> None:
    """llama.cpp's server and small models put raw newlines and tabs inside JSON strings;
    they are read as the model meant, not refused (nor sent to a repair round)."""
    server.json(completion('{"name": "Paris\n\tFrance", "population": 1}'))
    response = await make(server)(history(), structured_model=City)
    assert isinstance(response, ChatResponse)
    assert response.metadata == {"name": "Paris\n\tFrance", "population": 1}
    assert len(server.requests) == 1


async def test_structured_output_repaired(server: FakeServer) -> None:
    server.json(completion('{"name": "Paris"}', usage=(10, 2)))
    server.json(completion('{"name": "Paris", "population": 3}', usage=(20, 4)))
    response = await make(server)(history(), structured_model=City)
    assert isinstance(response, ChatResponse)
    assert City(**(response.metadata or {})) == City(name="Paris", population=3)
    assert response.usage is not None and response.usage.input_tokens == 30
    repair = server.last.json["messages"]
    assert repair[-2] == {"role": "assistant", "content": '{"name": "Paris"}'}
    assert repair[-1]["role"] == "user" and "population" in repair[-1]["content"]


async def test_structured_output_invalid_twice(server: FakeServer) -> None:
    server.json(completion("not json"))
    server.json(completion('{"name": 5}'))
    with pytest.raises(StructuredOutputError) as info:
        await make(server)(history(), structured_model=City)
    assert info.value.raw == '{"name": 5}'
    assert info.value.provider == "openai" and info.value.model == "gpt-4o-mini"
    assert len(server.requests) == 2


async def test_structured_output_when_streaming_is_one_final_chunk(server: FakeServer) -> None:
    server.json(completion('{"name": "Rome", "population": 1}'))
    out = await chunks(await make(server, stream=True)(history(), structured_model=City))
    assert len(out) == 1 and out[0].is_last and out[0].metadata == {"name": "Rome",
                                                                     "population": 1}


async def test_thinking(server: FakeServer) -> None:
    server.json(completion("42", reasoning="Six times seven."))
    response = await make(server, reasoning_effort="high")(history())
    assert isinstance(response, ChatResponse)
    assert response.content == [ThinkingBlock(thinking="Six times seven."), TextBlock(text="42")]
    assert server.last.json["reasoning_effort"] == "high"
    server.stream(stream_frames(["4", "2"], reasoning=["Six ", "times seven."]))
    out = await chunks(await make(server, stream=True)(history()))
    assert out[-1].thinking == "Six times seven." and out[-1].text == "42"


async def test_image_input(server: FakeServer) -> None:
    server.json(completion("A pixel."))
    await make(server)(image_history())
    assert server.last.json["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
    ]}]


async def test_history_with_tools_and_several_speakers(server: FakeServer) -> None:
    server.json(completion("ok"))
    msgs = [
        Msg("system", "Referee.", "system"),
        Msg("alice", "I say rock.", "user"),
        Msg("bob", "I say paper.", "user"),
        Msg("judge", [ThinkingBlock(thinking="hmm"),
                      ToolUseBlock(id="c1", name="get_time", input={})], "assistant"),
        Msg("system", [ToolResultBlock(id="c1", name="get_time", output="noon")], "system"),
    ]
    await make(server, custom_role_conversions={"system": "developer"})(msgs)
    assert server.last.json["messages"] == [
        {"role": "developer", "content": "Referee."},
        {"role": "user", "content": "alice: I say rock."},
        {"role": "user", "content": "bob: I say paper."},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "noon"},
    ]


async def test_rate_limit_honours_retry_after(server: FakeServer) -> None:
    retry_policy, sleeps = policy(2)
    server.json(error_body("slow down", "rate_limit"), 429, {"retry-after": "1.5"})
    server.json(completion("finally"))
    model = server.track(OpenAIChatModel("gpt-4o-mini", api_key="k", base_url=server.url,
                                         retry_policy=retry_policy))
    assert as_response(await model(history())).text == "finally"
    assert sleeps.delays == [1.5]


async def test_rate_limit_error_when_retries_run_out(server: FakeServer) -> None:
    server.json(error_body("slow down"), 429, {"retry-after": "7"})
    with pytest.raises(RateLimitError) as info:
        await make(server)(history())
    assert info.value.retry_after == 7.0 and "[openai:gpt-4o-mini]" in str(info.value)


async def test_server_error_then_success(server: FakeServer) -> None:
    retry_policy, sleeps = policy(3)
    server.json(error_body("boom"), 500)
    server.json(error_body("boom"), 503)
    server.json(completion("ok"))
    model = server.track(
        OpenAIChatModel("m", api_key="k", base_url=server.url, retry_policy=retry_policy))
    assert as_response(await model(history())).text == "ok"
    assert len(sleeps.delays) == 2 and sleeps.delays[0] <= sleeps.delays[1] * 2


async def test_authentication_error_is_not_retried(server: FakeServer) -> None:
    server.json(error_body("bad key", "invalid_request_error"), 401)
    with pytest.raises(AuthenticationError, match="bad key"):
        await make(server, retries=3)(history())
    assert len(server.requests) == 1


async def test_truncated_stream(server: FakeServer) -> None:
    server.stream(stream_frames(["Hel", "lo"], done=False), truncate=True)
    with pytest.raises(ProviderError) as info:
        await chunks(await make(server, stream=True)(history()))
    assert info.value.retryable


async def test_truncated_stream_before_first_chunk_is_retried(server: FakeServer) -> None:
    server.stream([], truncate=True)
    server.stream(stream_frames(["again"]))
    out = await chunks(await make(server, stream=True, retries=1)(history()))
    assert out[-1].text == "again"


async def test_malformed_json(server: FakeServer) -> None:
    server.raw('{"id": "x", "choices": [')
    with pytest.raises(ProviderError, match="openai:gpt-4o-mini"):
        await make(server)(history())
    server.stream(['data: {"id": "chatcmpl-1", "choi\n\n'])
    with pytest.raises(ProviderError):
        await chunks(await make(server, stream=True)(history()))


async def test_malformed_tool_arguments(server: FakeServer) -> None:
    server.json(completion(None, tool_calls=[("c", "get_weather", '{"city": ')]))
    with pytest.raises(ProviderError, match="not a JSON object"):
        await make(server)(history(), tools=[WEATHER_TOOL])


async def test_timeout(server: FakeServer) -> None:
    server.hang()
    with pytest.raises(ModelTimeoutError, match="openai:gpt-4o-mini"):
        await make(server, timeout=0.3)(history())


async def test_closing_a_stream_closes_the_http_response(server: FakeServer) -> None:
    server.stream(stream_frames(["first"], done=False), hang_after=True)
    stream = as_stream(await make(server, stream=True)(history()))
    first = await stream.__anext__()
    assert first.text == "first"
    await stream.aclose()
    await asyncio.wait_for(server.disconnected.wait(), 5)


async def test_init_chat_model_reads_environment(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    model = server.track(init_chat_model("openai:gpt-4o-mini", max_retries=0))
    assert isinstance(model, OpenAIChatModel)
    server.json(completion("env"))
    assert (await model(history())).text == "env"  # type: ignore[union-attr]
    assert server.last.headers["authorization"] == "Bearer sk-env"


async def test_batch(server: FakeServer) -> None:
    server.json(completion("a"))
    server.json(completion("b"))
    results = await make(server).batch([history(), history()], max_concurrency=1)
    assert [r.text for r in results] == ["a", "b"]  # type: ignore[union-attr]


def test_dict_messages_pass_through() -> None:
    from agentplex.model.openai import format_openai_messages

    raw = [{"role": "user", "content": "hi", "name": "x"}]
    assert format_openai_messages(raw) == raw
    assert json.dumps(format_openai_messages([Msg("a", "b", "user")]))


async def test_unknown_generate_kwargs_are_a_type_error(server: FakeServer) -> None:
    with pytest.raises(TypeError, match="not_a_parameter"):
        await make(server, generate_kwargs={"not_a_parameter": 1})(history())
    assert server.requests == []


async def test_tool_round_trip_on_a_server_that_rejects_null_content(server: FakeServer
                                                                    ) -> None:
    server.validate = llamacpp_validation
    server.json(completion(None, tool_calls=[("c1", "get_weather", {"city": "Oslo"})]))
    server.json(completion("Sunny in Oslo."))
    model = make(server)
    first = await model(history(), tools=[WEATHER_TOOL])
    assert isinstance(first, ChatResponse)
    turn = Msg("assistant", first.content, "assistant")
    result = Msg("system", [ToolResultBlock(id="c1", name="get_weather", output="sunny")],
                 "system")
    second = await model([*history(), turn, result], tools=[WEATHER_TOOL])
    assert isinstance(second, ChatResponse)
    assert second.text == "Sunny in Oslo."
    sent = server.last.json["messages"]
    assert sent[2] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}


async def test_auto_structured_output_falls_back_to_a_forced_tool(server: FakeServer) -> None:
    server.validate = llamacpp_validation
    answer = completion(None, tool_calls=[("c1", "City", {"name": "Oslo", "population": 7})])
    server.json(answer).json(answer)
    model = make(server, retries=2)
    response = await model(history(), structured_model=City)
    assert isinstance(response, ChatResponse)
    assert response.metadata == {"name": "Oslo", "population": 7}
    first, second = server.requests
    assert first.json["response_format"]["type"] == "json_schema"  # tried once, not retried
    assert "response_format" not in second.json
    assert second.json["tool_choice"] == {"type": "function", "function": {"name": "City"}}
    await model(history(), structured_model=City)  # remembered: straight to the tool
    assert len(server.requests) == 3 and "response_format" not in server.last.json


async def test_native_structured_output_does_not_fall_back(server: FakeServer) -> None:
    server.validate = llamacpp_validation
    with pytest.raises(ProviderError) as info:
        await make(server, structured_output="native")(history(), structured_model=City)
    assert info.value.status_code == 500 and len(server.requests) == 1


async def test_structured_output_modes(server: FakeServer) -> None:
    server.json(completion(None, tool_calls=[("c1", "City", {"name": "A", "population": 1})]))
    server.json(completion('{"name": "B", "population": 2}'))
    model = make(server)
    tool = await model(history(), structured_model=City, structured_output="tool")
    assert isinstance(tool, ChatResponse)
    assert tool.metadata == {"name": "A", "population": 1}
    assert server.last.json["tool_choice"]["function"]["name"] == "City"
    json_mode = await model(history(), structured_model=City, structured_output="json_object")
    assert isinstance(json_mode, ChatResponse)
    assert json_mode.metadata == {"name": "B", "population": 2}
    body = server.last.json
    assert body["response_format"] == {"type": "json_object"}
    assert '"population"' in body["messages"][-1]["content"]
    with pytest.raises(ValueError, match="structured_output"):
        await model(history(), structured_model=City, structured_output="grammar")


async def test_schema_names_are_sanitised(server: FakeServer) -> None:
    from typing import Generic, TypeVar

    from pydantic import BaseModel

    T = TypeVar("T")

    class Answer(BaseModel, Generic[T]):
        value: T

    server.json(completion('{"value": 3}'))
    response = await make(server)(history(), structured_model=Answer[int])
    assert isinstance(response, ChatResponse)
    assert response.metadata == {"value": 3}
    name = server.last.json["response_format"]["json_schema"]["name"]
    assert name == "Answer_int_"
