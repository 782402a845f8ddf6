"""Hostile provider servers: whatever a server on loopback answers with status 200 (random
JSON, an OpenAI completion with any field replaced or removed, bytes that are not JSON),
every provider returns a response or raises a typed ``ModelError``, never a ``KeyError``,
``TypeError`` or ``AttributeError`` from its parsing; structured output whatever the text
is a validated instance or a ``StructuredOutputError``."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentplex.model import ChatResponse, ModelError, StructuredOutputError
from agentplex.model._hosted import HostedChatModel
from tests.support.loop_thread import LoopThread, loop_thread
from tests.support.model_inputs import City, history
from tests.support.openai_wire import completion
from tests.support.provider_server import FakeServer
from tests.support.provider_wires import WIRES, Wire

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12),
                    st.floats(allow_nan=False, allow_infinity=False))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=10)
VALID = completion("hi", tool_calls=[("c1", "get_weather", {"city": "Paris"})])
PATHS = [("choices",), ("choices", 0), ("choices", 0, "message"),
         ("choices", 0, "message", "content"), ("choices", 0, "message", "tool_calls"),
         ("choices", 0, "message", "tool_calls", 0),
         ("choices", 0, "message", "tool_calls", 0, "function"),
         ("choices", 0, "message", "tool_calls", 0, "function", "arguments"),
         ("choices", 0, "message", "tool_calls", 0, "function", "name"),
         ("choices", 0, "message", "tool_calls", 0, "id"), ("choices", 0, "finish_reason"),
         ("choices", 0, "logprobs"), ("usage",), ("usage", "prompt_tokens"), ("model",),
         ("id",)]


def _mutated(path: tuple[Any, ...], value: Any, remove: bool) -> dict[str, Any]:
    body = copy.deepcopy(VALID)
    node: Any = body
    for key in path[:-1]:
        node = node[key]
    if remove and isinstance(node, dict):
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return body


answers = st.one_of(
    values.map(json.dumps),
    st.builds(_mutated, st.sampled_from(PATHS), values, st.booleans()).map(json.dumps),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
)


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    with loop_thread() as running:
        yield running


@pytest.fixture(scope="module", params=WIRES, ids=lambda w: w.name)
def served(request: pytest.FixtureRequest, loop: LoopThread
           ) -> Iterator[tuple[LoopThread, FakeServer, HostedChatModel]]:
    wire: Wire = request.param
    server = FakeServer()
    loop.run(server.start())
    try:
        yield loop, server, wire.make(server)
    finally:
        loop.run(server.stop())


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(answer=answers)
def test_any_answer_gives_a_response_or_a_typed_error(
        served: tuple[LoopThread, FakeServer, HostedChatModel], answer: str) -> None:
    loop, server, model = served
    server.raw(answer)
    try:
        got = loop.run(model(history()))
    except ModelError:
        return
    assert isinstance(got, ChatResponse)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=st.one_of(values.map(json.dumps), st.text(max_size=40), st.builds(
    lambda name, pop: json.dumps({"name": name, "population": pop}), values, values)))
def test_any_structured_text_gives_an_instance_or_a_structured_output_error(
        served: tuple[LoopThread, FakeServer, HostedChatModel], text: str) -> None:
    loop, server, model = served
    wire = next(w for w in WIRES if w.name == model.provider)
    for _ in range(2):  # the answer and its repair round
        wire.structured(server, text)
    try:
        got = loop.run(model(history(), structured_model=City))
    except StructuredOutputError as exc:
        assert exc.mode in ("native", "tool", "json_object")
        return
    finally:
        server._queue.clear()  # a valid first answer leaves the repair's unused
    assert isinstance(got, ChatResponse)
    City.model_validate(got.metadata)
