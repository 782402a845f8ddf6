"""``agentplex serve`` seen by the official clients: the openai SDK and huggingface_hub."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentplex.message import ImageBlock, ToolResultBlock, ToolUseBlock
from agentplex.model import ScriptedChatModel
from agentplex.serving import ModelServer
from tests.support.model_inputs import WEATHER_TOOL as WEATHER

pytestmark = pytest.mark.anyio

openai = pytest.importorskip("openai")
PNG = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture
async def oai(server: ModelServer) -> AsyncIterator[Any]:
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="unused",
                                  max_retries=0) as c:
        yield c


async def test_answer_and_usage(oai: Any, scripted: ScriptedChatModel) -> None:
    got = await oai.chat.completions.create(
        model="echo", messages=[{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "hello"}])
    assert got.object == "chat.completion"
    assert got.model == "echo"
    assert got.choices[0].message.content == "you said hello"
    assert got.choices[0].finish_reason == "stop"
    assert got.usage is not None and got.usage.completion_tokens == 3
    sent = scripted.calls[0]["messages"]
    assert [m.role for m in sent] == ["system", "user"]


async def test_stream_with_usage(oai: Any) -> None:
    stream = await oai.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "you said one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 3 + 5
    assert all(c.usage is None for c in chunks[:-1])


async def test_tools_round_trip(oai: Any, scripted: ScriptedChatModel) -> None:
    c = oai
    asked = [{"role": "user", "content": "weather in Paris?"}]
    got = await c.chat.completions.create(model="echo", messages=asked, tools=[WEATHER],
                                          tool_choice="auto")
    call = got.choices[0].message.tool_calls[0]
    assert got.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name) == ("call_1", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert got.choices[0].message.content == "Let me look."
    assert scripted.calls[-1]["tools"][0]["function"]["name"] == "get_weather"
    followup = [*asked, got.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    again = await c.chat.completions.create(
        model="echo", messages=followup, tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert again.choices[0].message.content == "you said "
    history = scripted.calls[-1]["messages"]
    assert isinstance(history[1].content[1], ToolUseBlock)
    result = history[2].content[0]
    assert isinstance(result, ToolResultBlock)
    assert (result.name, result.output) == ("get_weather", "sunny")
    assert scripted.calls[-1]["tool_choice"] == "get_weather"


async def test_streamed_tool_call(oai: Any) -> None:
    stream = await oai.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER],
        stream=True)
    arguments = ""
    names = []
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                assert call.index == 0
                names.append(call.function.name)
                arguments += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert names[0] == "get_weather" and set(names[1:]) <= {None}
    assert json.loads(arguments) == {"city": "Paris"}
    assert finish == "tool_calls"


async def test_images_and_sampling_arguments_reach_the_model(
    oai: Any, scripted: ScriptedChatModel
) -> None:
    await oai.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": PNG}},
            {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}}]}],
        max_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop=["END"], logprobs=True,
        top_logprobs=2, response_format={"type": "json_schema", "json_schema": {
            "name": "answer", "schema": {"type": "object"}}})
    call = scripted.calls[-1]
    images = [b for b in call["messages"][0].content if isinstance(b, ImageBlock)]
    assert images[0].source.type == "base64" and images[0].source.media_type == "image/png"
    assert images[1].source.type == "url"
    assert {k: call[k] for k in ("max_tokens", "temperature", "top_p", "seed", "stop",
                                 "logprobs", "top_logprobs")} == {
        "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": ["END"],
        "logprobs": True, "top_logprobs": 2}
    assert call["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": {"type": "object"}}}


async def test_logprobs(oai: Any) -> None:
    c = oai
    got = await c.chat.completions.create(
        model="logprobs", messages=[{"role": "user", "content": "hi"}], logprobs=True,
        top_logprobs=1)
    content = got.choices[0].logprobs.content
    assert [(e.token, e.logprob) for e in content] == [("a", -0.1), (" b", -0.5)]
    assert content[0].top_logprobs[0].token == "a" and content[0].bytes == [97]
    stream = await c.chat.completions.create(
        model="logprobs", messages=[{"role": "user", "content": "hi"}], logprobs=True,
        stream=True)
    streamed = [e.token async for chunk in stream for choice in chunk.choices
                for e in (choice.logprobs.content if choice.logprobs else None) or []]
    assert streamed == ["a", " b"]


async def test_models_endpoint(oai: Any) -> None:
    c = oai
    listed = await c.models.list()
    assert [m.id for m in listed.data] == ["echo", "logprobs"]
    assert (await c.models.retrieve("echo")).id == "echo"
    with pytest.raises(openai.NotFoundError):
        await c.models.retrieve("other")


async def test_huggingface_client(server: ModelServer) -> None:
    hub = pytest.importorskip("huggingface_hub")
    hf = hub.AsyncInferenceClient(base_url=server.base_url.removesuffix("/v1"))
    try:
        got = await hf.chat_completion(messages=[{"role": "user", "content": "hi"}],
                                       model="echo", max_tokens=5)
        assert got.choices[0].message.content == "you said hi"
        text = ""
        async for chunk in await hf.chat_completion(
                messages=[{"role": "user", "content": "a b"}], model="echo", stream=True):
            text += chunk.choices[0].delta.content or "" if chunk.choices else ""
        assert text == "you said a b"
        tool = await hf.chat_completion(messages=[{"role": "user", "content": "weather?"}],
                                        model="echo", tools=[WEATHER], tool_choice="auto")
        call = tool.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather"
        arguments = call.function.arguments
        assert (json.loads(arguments) if isinstance(arguments, str) else arguments) == {
            "city": "Paris"}
        regex = await hf.chat_completion(
            messages=[{"role": "user", "content": "x"}], model="echo",
            response_format={"type": "regex", "value": "[a-z]+"})
        assert regex.choices[0].message.content == "you said x"
    finally:
        await hf.close()
