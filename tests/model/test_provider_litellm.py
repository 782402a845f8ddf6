"""LiteLLMChatModel against a loopback OpenAI-wire server (``openai/...`` with api_base)."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from agentplex.message import Msg, ToolResultBlock
from agentplex.model import ChatResponse, RateLimitError, init_chat_model
from tests.support.model_inputs import WEATHER_TOOL, City, history
from tests.support.openai_wire import completion, error_body, llamacpp_validation, stream_frames
from tests.support.provider_server import FakeServer

if importlib.util.find_spec("litellm") is None:  # not imported here: a bare import of
    # litellm fetches its price map from the network; agentplex's import turns that off
    pytest.skip("LiteLLM is not installed (the 'litellm' extra)", allow_module_level=True)
pytestmark = pytest.mark.anyio


def make(server: FakeServer, **kw: Any) -> Any:
    model = init_chat_model("litellm:openai/test-model", api_key="k",
                            api_base=server.url + "/v1", max_retries=0, **kw)
    return server.track(model)


async def test_text_tools_and_arguments(server: FakeServer) -> None:
    server.validate = llamacpp_validation
    server.json(completion(None, tool_calls=[("c1", "get_weather", {"city": "Oslo"})]))
    server.json(completion("Sunny.", usage=(30, 2)))
    model = make(server, temperature=0.2, stop=["END"])
    first = await model(history(), tools=[WEATHER_TOOL], tool_choice="get_weather")
    body = server.last.json
    assert server.last.path == "/v1/chat/completions"
    assert (body["model"], body["temperature"], body["stop"]) == ("test-model", 0.2, ["END"])
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    [call] = first.tool_calls
    assert call.input == {"city": "Oslo"}
    result = Msg("system", [ToolResultBlock(id=call.id, name=call.name, output="sunny")],
                 "system")
    second = await model([*history(), Msg("assistant", first.content, "assistant"), result],
                         tools=[WEATHER_TOOL], max_tokens=50)
    assert second.text == "Sunny." and server.last.json["max_tokens"] == 50
    assert second.usage is not None and second.usage.input_tokens == 30


async def test_streaming(server: FakeServer) -> None:
    server.stream(stream_frames(["Hel", "lo"], usage=(3, 2)))
    chunks: list[ChatResponse] = [c async for c in make(server).astream("hi")]
    assert chunks[-1].text == "Hello" and chunks[-1].is_last
    assert server.last.json["stream"] is True


async def test_structured_output_falls_back_to_a_tool(server: FakeServer) -> None:
    server.validate = llamacpp_validation
    server.json(completion(None, tool_calls=[("c", "City", {"name": "A", "population": 1})]))
    response = await make(server)(history(), structured_model=City)
    assert response.metadata == {"name": "A", "population": 1}
    assert len(server.requests) == 2


async def test_rate_limit_is_typed(server: FakeServer) -> None:
    server.json(error_body("slow down", "rate_limit_error"), 429, {"retry-after": "2"})
    with pytest.raises(RateLimitError, match="litellm"):
        await make(server)(history())
