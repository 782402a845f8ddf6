"""Token counting: the providers' count endpoints on loopback, the estimate elsewhere."""

from __future__ import annotations

import pytest

from agentplex.model import AuthenticationError, RetryingModel
from agentplex.model.lowlevel import estimate_tokens
from tests.support.model_inputs import WEATHER_TOOL, history
from tests.support.provider_server import FakeServer
from tests.support.provider_wires import AnthropicWire, GeminiWire, OllamaWire, OpenAIWire

pytestmark = pytest.mark.anyio


async def test_anthropic_uses_its_count_endpoint(server: FakeServer) -> None:
    server.json({"input_tokens": 42})
    model = AnthropicWire().make(server)
    assert await RetryingModel(model).count_tokens(history(), [WEATHER_TOOL]) == 42
    assert server.last.path == "/v1/messages/count_tokens"
    body = server.last.json
    assert body["system"] == "You are terse." and body["tools"][0]["name"] == "get_weather"
    assert body["messages"] == [{"role": "user", "content": [{"type": "text",
                                                              "text": "Hi there"}]}]


async def test_gemini_uses_its_count_endpoint(server: FakeServer) -> None:
    server.json({"totalTokens": 17})
    model = GeminiWire().make(server)
    assert await model.count_tokens(history()) == 17
    assert server.last.path == "/v1/models/test-model:countTokens"
    texts = [p["text"] for c in server.last.json["contents"] for p in c["parts"]]
    assert texts == ["You are terse.", "Hi there"]


async def test_count_endpoint_errors_are_typed(server: FakeServer) -> None:
    AnthropicWire().error(server, 401, "bad key")
    with pytest.raises(AuthenticationError):
        await AnthropicWire().make(server).count_tokens(history())


@pytest.mark.parametrize("wire", [OpenAIWire(), OllamaWire()], ids=lambda w: w.name)
async def test_others_estimate_without_a_request(server: FakeServer, wire: object) -> None:
    model = wire.make(server)  # type: ignore[attr-defined]
    count = await model.count_tokens(history(), [WEATHER_TOOL])
    assert count == estimate_tokens(history(), [WEATHER_TOOL]) > estimate_tokens(history())
    assert server.requests == []
