"""``agentplex serve transformers:default``: the embedded model behind the server, with
grammar-constrained response formats and tool calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentplex.serving import ModelServer
from tests.support.model_inputs import WEATHER_TOOL as WEATHER

# The embedded model decodes on the CPU: slow on a loaded machine, never timed.
pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(900)]

openai = pytest.importorskip("openai")
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("torch")
    from agentplex.model import init_chat_model
    from agentplex.model.local import embedded_gguf

    try:
        embedded_gguf()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return init_chat_model("transformers:default", stream=True, max_new_tokens=24,
                           cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture
async def oai(smol: Any) -> AsyncIterator[Any]:
    async with ModelServer(smol, served_model_name="transformers:default") as srv, \
            openai.AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0) as c:
        yield c


async def test_answers_and_streams(oai: Any) -> None:
    got = await oai.chat.completions.create(model="transformers:default", messages=CAPITAL,
                                            max_tokens=12)
    assert "Paris" in got.choices[0].message.content
    assert got.usage.completion_tokens <= 12
    stream = await oai.chat.completions.create(model="transformers:default", messages=CAPITAL,
                                               max_tokens=12, stream=True,
                                               stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == got.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == got.usage.completion_tokens


async def test_constrained_formats(oai: Any) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"]}
    got = await oai.chat.completions.create(
        model="transformers:default", messages=CAPITAL, max_tokens=20,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    assert set(json.loads(got.choices[0].message.content)) == {"city"}
    regex = await oai.chat.completions.create(
        model="transformers:default", messages=CAPITAL, max_tokens=8,
        extra_body={"response_format": {"type": "regex", "value": "(yes|no)"}})
    assert regex.choices[0].message.content in ("yes", "no")
    obj = await oai.chat.completions.create(
        model="transformers:default", messages=CAPITAL, max_tokens=20,
        response_format={"type": "json_object"})
    assert isinstance(json.loads(obj.choices[0].message.content), dict)


async def test_forced_tool_call(oai: Any) -> None:
    got = await oai.chat.completions.create(
        model="transformers:default", max_tokens=48, tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    call = got.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    assert got.choices[0].finish_reason == "tool_calls"
