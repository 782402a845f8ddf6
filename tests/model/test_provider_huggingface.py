"""HuggingFaceChatModel's structured output against loopback servers speaking the Hugging
Face (OpenAI-shaped) wire: one that enforces a schema where llama.cpp's server reads it, and
one that enforces none (as vLLM does with TGI's grammar form)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentplex.model import StructuredOutputError
from agentplex.model.huggingface import HuggingFaceChatModel
from tests.support.model_inputs import City, history, policy
from tests.support.openai_wire import completion
from tests.support.provider_server import FakeServer, Recorded, Responder, json_response
from tests.support.results import as_response

pytestmark = pytest.mark.anyio

MISSING = '{"name": "Paris"}'  # what a small model writes when nothing holds it to the schema


def make(server: FakeServer, **kw: Any) -> HuggingFaceChatModel:
    retry_policy, _ = policy(0)
    return server.track(HuggingFaceChatModel("test-model", base_url=server.url, token="hf_x",
                                             retry_policy=retry_policy, **kw))


def llamacpp_grammar(request: Recorded) -> Responder:
    """llama.cpp's server: ``response_format`` ``json_schema`` (its ``json_schema.schema``)
    or ``json_object`` with a ``schema`` constrain the answer to the schema; anything else
    (TGI's ``value`` among them) is "any JSON object", and the model leaves a field out."""
    fmt = request.json.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" \
        else fmt.get("schema") if fmt.get("type") == "json_object" else None
    if schema is not None and set(schema.get("required", ())) == {"name", "population"}:
        return json_response(completion(json.dumps({"name": "Paris", "population": 2100000})))
    return json_response(completion(MISSING))


async def test_the_schema_reaches_a_llamacpp_server_in_a_form_it_enforces(
        server: FakeServer) -> None:
    server.validate = llamacpp_grammar
    response = as_response(await make(server)(history(), structured_model=City))
    assert response.metadata == {"name": "Paris", "population": 2100000}
    assert len(server.requests) == 1  # enforced: no repair round was needed
    fmt = server.last.json["response_format"]
    assert fmt["value"] == fmt["schema"]  # TGI reads `value`, llama.cpp `schema`


async def test_a_server_that_ignores_the_schema_gets_an_error_naming_the_mode(
        server: FakeServer) -> None:
    server.validate = lambda request: json_response(completion(MISSING))
    with pytest.raises(StructuredOutputError) as info:
        await make(server)(history(), structured_model=City)
    error = info.value
    assert error.mode == "native" and error.raw == MISSING
    assert error.provider == "huggingface"
    assert "structured_output='native'" in str(error)
    assert "structured_output='tool'" in str(error)  # what to do instead
    assert "population" in str(error)


async def test_a_forced_tool_names_its_mode_too(server: FakeServer) -> None:
    server.validate = lambda request: json_response(completion(
        None, tool_calls=[("c1", "City", {"name": "Paris"})]))
    with pytest.raises(StructuredOutputError) as info:
        await make(server, structured_output="tool")(history(), structured_model=City)
    assert info.value.mode == "tool" and "forced tool call" in str(info.value)
    assert server.last.json["tool_choice"]["function"]["name"] == "City"
