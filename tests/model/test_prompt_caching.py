"""Prompt caching on each wire: Anthropic breakpoints, OpenAI's cache key, Gemini's cache."""

from __future__ import annotations

import pytest

from agentplex.message import Msg
from agentplex.model import ChatResponse
from agentplex.model.gemini import GeminiChatModel
from agentplex.model.openai import OpenAIChatModel
from tests.support.model_inputs import WEATHER_TOOL, history
from tests.support.openai_wire import completion
from tests.support.provider_server import FakeServer
from tests.support.provider_wires import AnthropicWire, GeminiWire

pytestmark = pytest.mark.anyio

EPHEMERAL = {"type": "ephemeral"}


def conversation() -> list[Msg]:
    return [*history(), Msg("assistant", "Hello.", "assistant"),
            Msg("user", "What is the weather?", "user")]


async def test_anthropic_breakpoints(server: FakeServer) -> None:
    wire = AnthropicWire()
    answer = wire.message([{"type": "text", "text": "Sunny."}], usage=(10, 2))
    answer["usage"].update(cache_read_input_tokens=900, cache_creation_input_tokens=40)
    server.json(answer)
    model = wire.make(server, prompt_caching=True)
    response = await model(conversation(), tools=[WEATHER_TOOL])
    assert isinstance(response, ChatResponse)
    body = server.last.json
    assert body["system"] == [{"type": "text", "text": "You are terse.",
                               "cache_control": EPHEMERAL}]
    assert body["tools"][-1]["cache_control"] == EPHEMERAL
    marked = [i for i, m in enumerate(body["messages"])
              if any("cache_control" in b for b in m["content"])]
    assert marked == [0, 2]  # the user turn before the last (read) and the last (written)
    assert sum("cache_control" in str(part) for part in [body["system"], body["tools"],
                                                         body["messages"]]) == 3
    assert response.usage is not None
    assert (response.usage.cached_input_tokens, response.usage.cache_creation_input_tokens,
            response.usage.input_tokens) == (900, 40, 950)


async def test_anthropic_one_hour_cache(server: FakeServer) -> None:
    wire = AnthropicWire()
    wire.text(server, "ok")
    await wire.make(server, prompt_caching="1h")(history())
    body = server.last.json
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral",
                                                                    "ttl": "1h"}
    wire.text(server, "ok")
    await wire.make(server)(history())
    assert "cache_control" not in str(server.last.json)


async def test_openai_prompt_cache_key(server: FakeServer) -> None:
    body = completion("hi", usage=(2000, 3))
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 1920}
    server.json(body)
    model = server.track(OpenAIChatModel("m", api_key="k", base_url=server.url + "/v1",
                                         prompt_cache_key="tenant-7"))
    response = await model(history())
    assert isinstance(response, ChatResponse)
    assert server.last.json["prompt_cache_key"] == "tenant-7"
    assert response.usage is not None and response.usage.cached_input_tokens == 1920


async def test_gemini_cached_content(server: FakeServer) -> None:
    wire = GeminiWire()
    server.json({"name": "cachedContents/abc123", "model": "models/test-model",
                 "usageMetadata": {"totalTokenCount": 4096}})
    model = wire.make(server)
    assert isinstance(model, GeminiChatModel)
    name = await model.create_cache(history(), [WEATHER_TOOL], ttl_seconds=600)
    assert name == "cachedContents/abc123"
    created = server.last
    assert created.path == "/v1/cachedContents"
    assert created.json["ttl"] == "600s" and created.json["model"] == "models/test-model"
    assert created.json["systemInstruction"]["parts"][0]["text"] == "You are terse."
    answer = wire.answer([{"text": "Sunny."}])
    answer["usageMetadata"]["cachedContentTokenCount"] = 4000
    server.json(answer)
    response = await model([Msg("user", "And tomorrow?", "user")])
    assert isinstance(response, ChatResponse)
    assert server.last.json["cachedContent"] == "cachedContents/abc123"
    assert response.usage is not None and response.usage.cached_input_tokens == 4000
