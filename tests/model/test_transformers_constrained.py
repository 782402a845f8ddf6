"""Constrained decoding: structured output, tool calls and grammars always validate."""

from __future__ import annotations

import asyncio
import json
import random
import re
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field, create_model

from agentplex.model import ChatResponse, TransformersChatModel, UnsupportedOptionError
from tests.support.results import as_stream

pytestmark = pytest.mark.anyio

ASK = [{"role": "user", "content": "Fill in the form."}]


def random_model(rng: random.Random, name: str, depth: int = 0) -> type[BaseModel]:
    """A pydantic class with 1-4 random fields (numbers with bounds, enums, lists, nesting)."""
    fields: dict[str, Any] = {}
    kinds = ["int", "float", "bool", "str", "enum", "list", "optional"]
    if depth < 2:
        kinds.append("nested")
    for i in range(rng.randint(1, 4)):
        kind = rng.choice(kinds)
        key = f"{kind}_{i}"
        if kind == "int":
            low = rng.randint(-50, 50)
            fields[key] = (Annotated[int, Field(ge=low, le=low + rng.randint(0, 100))], ...)
        elif kind == "float":
            fields[key] = (float, ...)
        elif kind == "bool":
            fields[key] = (bool, ...)
        elif kind == "str":
            fields[key] = (Annotated[str, Field(max_length=rng.randint(1, 16))], ...)
        elif kind == "enum":
            options = tuple(rng.sample(["red", "green", "blue", "cyan", "ink", "a b"], 3))
            fields[key] = (Literal[options], ...)
        elif kind == "list":
            low = rng.randint(0, 2)
            item = rng.choice([int, bool, Annotated[str, Field(max_length=5)]])
            fields[key] = (Annotated[list[item], Field(min_length=low, max_length=low + 3)], ...)  # type: ignore[valid-type]
        elif kind == "optional":
            fields[key] = (int | None, ...)
        else:
            fields[key] = (random_model(rng, f"{name}_{i}", depth + 1), ...)
    return create_model(name, **fields)


async def test_structured_output_validates_for_random_schemas(
    tiny: TransformersChatModel,
) -> None:
    rng = random.Random(1234)
    models = [random_model(rng, f"Form{i}") for i in range(24)]
    responses = await asyncio.wait_for(
        asyncio.gather(*(tiny(ASK, structured_model=m, max_tokens=400) for m in models)),
        timeout=180,
    )
    for model, response in zip(models, responses, strict=True):
        assert isinstance(response, ChatResponse)
        assert response.finish_reason == "stop", response.text
        parsed = model.model_validate_json(response.text)
        assert response.metadata == parsed.model_dump()


async def test_structured_output_streams(tiny: TransformersChatModel) -> None:
    class Point(BaseModel):
        x: int
        y: int
        label: Annotated[str, Field(max_length=8)]

    stream = as_stream(await tiny(ASK, structured_model=Point, stream=True, max_tokens=100))
    chunks = [c async for c in stream]
    assert chunks[-1].is_last and chunks[-1].metadata is not None
    assert Point.model_validate(chunks[-1].metadata) == Point.model_validate_json(chunks[-1].text)
    assert all(c.metadata is None for c in chunks[:-1])


class Weather(BaseModel):
    city: Annotated[str, Field(max_length=20)]
    unit: Literal["C", "F"]


class Add(BaseModel):
    a: Annotated[int, Field(ge=0, le=1000)]
    b: Annotated[int, Field(ge=0, le=1000)]


TOOLS = [
    {"type": "function", "function": {"name": "weather", "description": "Weather.",
                                      "parameters": Weather.model_json_schema()}},
    {"type": "function", "function": {"name": "add", "description": "Add two numbers.",
                                      "parameters": Add.model_json_schema()}},
]
SCHEMAS: dict[str, type[BaseModel]] = {"weather": Weather, "add": Add}


@pytest.mark.parametrize("choice", ["required", "any", "add", "weather"])
async def test_tool_calls_validate(tiny: TransformersChatModel, choice: str) -> None:
    prompts = [[{"role": "user", "content": text}] for text in
               ["What is 2 plus 3?", "Weather in Rome?", "hello", "Count to ten."]]
    responses = await asyncio.wait_for(
        asyncio.gather(*(tiny(p, tools=TOOLS, tool_choice=choice, max_tokens=120)
                         for p in prompts)), timeout=120)
    for response in responses:
        assert isinstance(response, ChatResponse)
        assert len(response.tool_calls) == 1, response.content
        call = response.tool_calls[0]
        if choice in SCHEMAS:
            assert call.name == choice
        SCHEMAS[call.name].model_validate(call.input)
        assert call.id.startswith("call_")


async def test_unknown_tool_choice_is_refused(tiny: TransformersChatModel) -> None:
    with pytest.raises(UnsupportedOptionError):
        await tiny(ASK, tools=TOOLS, tool_choice="nope")


async def test_tool_choice_none_renders_no_tools(tiny: TransformersChatModel) -> None:
    response = await tiny([{"role": "user", "content": "Count to ten."}], tools=TOOLS,
                          tool_choice="none")
    assert isinstance(response, ChatResponse)
    assert response.text == "one two three four five six seven eight nine ten"


@pytest.mark.parametrize(
    "pattern",
    [r"\d{3}-[a-z]{2,4}", r"(yes|no)", r"[A-Z][a-z]{1,8} [0-9]{1,4}", r"\(\d\d\) [a-f]{4}!"],
)
async def test_regex_grammar(tiny: TransformersChatModel, pattern: str) -> None:
    response = await tiny(ASK, grammar={"type": "regex", "value": pattern}, max_tokens=60)
    assert isinstance(response, ChatResponse)
    assert re.fullmatch(pattern, response.text), response.text


async def test_json_response_format(tiny: TransformersChatModel) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"},
                                                "n": {"type": "integer", "minimum": 5}},
              "required": ["ok", "n"], "additionalProperties": False}
    for spec in ({"type": "json", "value": schema},
                 {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}):
        response = await tiny(ASK, response_format=spec, max_tokens=60)
        assert isinstance(response, ChatResponse)
        value = json.loads(response.text)
        assert set(value) == {"ok", "n"} and isinstance(value["ok"], bool) and value["n"] >= 5
        assert response.metadata == value


async def test_ebnf_grammar(tiny: TransformersChatModel) -> None:
    grammar = 'root ::= "(" num ("+" num)* ")"\nnum ::= [1-9] [0-9]?'
    response = await tiny(ASK, grammar={"type": "ebnf", "value": grammar}, max_tokens=40)
    assert isinstance(response, ChatResponse)
    assert re.fullmatch(r"\([1-9][0-9]?(\+[1-9][0-9]?)*\)", response.text), response.text


async def test_tool_calls_validate_for_random_tool_schemas(tiny: TransformersChatModel) -> None:
    rng = random.Random(99)
    rounds = []
    for r in range(6):
        models = {f"tool_{r}_{i}": random_model(rng, f"Args{r}{i}") for i in range(3)}
        tools = [{"type": "function", "function": {"name": name, "description": "A tool.",
                                                   "parameters": m.model_json_schema()}}
                 for name, m in models.items()]
        choice = rng.choice(["required", *models])
        rounds.append((models, choice, tiny(ASK, tools=tools, tool_choice=choice,
                                            max_tokens=300)))
    responses = await asyncio.wait_for(asyncio.gather(*(c for _, _, c in rounds)), timeout=180)
    for (models, choice, _), response in zip(rounds, responses, strict=True):
        assert isinstance(response, ChatResponse)
        assert len(response.tool_calls) == 1, response.content
        call = response.tool_calls[0]
        assert call.name in models and choice in ("required", call.name)
        models[call.name].model_validate(call.input)
