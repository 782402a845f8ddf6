"""Generation arguments in one vocabulary, checked in the right field of every wire."""

from __future__ import annotations

from typing import Any

import pytest

from agentplex.model import InvalidRequestError, UnsupportedOptionError, init_chat_model
from tests.support.model_inputs import history
from tests.support.provider_server import FakeServer
from tests.support.provider_wires import ALL_OPTIONS, WIRES, Wire

pytestmark = pytest.mark.anyio
per_wire = pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)

VALUES: dict[str, Any] = {
    "temperature": 0.2, "top_p": 0.5, "top_k": 40, "max_tokens": 64, "stop": ["END"],
    "seed": 7, "presence_penalty": 0.1, "frequency_penalty": 0.3}


@per_wire
async def test_arguments_land_in_the_wire_fields(server: FakeServer, wire: Wire) -> None:
    supported = sorted(wire.options)
    at_construction = {k: VALUES[k] for k in supported[::2]}
    per_call = {k: VALUES[k] for k in supported[1::2]}
    wire.text(server, "ok")
    await wire.make(server, **at_construction)(history(), **per_call)
    assert wire.sent_options(server.last.json) == {k: VALUES[k] for k in supported}


@per_wire
async def test_a_call_overrides_the_construction(server: FakeServer, wire: Wire) -> None:
    wire.text(server, "ok")
    wire.text(server, "ok")
    model = wire.make(server, temperature=0.9, generate_kwargs={"max_tokens": 10})
    await model(history(), temperature=0.1, max_new_tokens=20)
    assert wire.sent_options(server.last.json) == {"temperature": 0.1, "max_tokens": 20}
    await model(history(), stop_sequences="STOP")  # smolagents' name, a single string
    assert wire.sent_options(server.last.json) == {"temperature": 0.9, "max_tokens": 10,
                                                   "stop": ["STOP"]}


@per_wire
async def test_unsupported_arguments_are_named(server: FakeServer, wire: Wire) -> None:
    refused = sorted(ALL_OPTIONS - wire.options)
    if not refused:
        pytest.skip(f"{wire.name} carries every generation argument")
    with pytest.raises(UnsupportedOptionError, match=refused[0]) as info:
        wire.make(server, **{refused[0]: VALUES[refused[0]]})
    assert info.value.options == (refused[0],)
    model = wire.make(server)
    with pytest.raises(UnsupportedOptionError) as info:
        await model(history(), **{k: VALUES[k] for k in refused})
    assert info.value.options == tuple(refused)
    assert server.requests == []


@per_wire
async def test_invalid_values_fail_before_sending(server: FakeServer, wire: Wire) -> None:
    with pytest.raises(InvalidRequestError, match="temperature"):
        await wire.make(server)(history(), temperature=-1)
    with pytest.raises(InvalidRequestError, match="both given"):
        await wire.make(server)(history(), max_new_tokens=3, max_output_tokens=4)
    assert server.requests == []


async def test_init_chat_model_takes_generation_arguments(server: FakeServer) -> None:
    server.json({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": "hi"}}]})
    model = server.track(init_chat_model("openai:m", base_url=server.url + "/v1", api_key="k",
                                         temperature=0.2, max_tokens=5, user="u-1"))
    await model(history())
    body = server.last.json
    assert (body["temperature"], body["max_tokens"], body["user"]) == (0.2, 5, "u-1")


async def test_anthropic_sampling_travels_in_the_body(server: FakeServer) -> None:
    """anthropic 2.x has no temperature/top_p/top_k parameters; they go via extra_body."""
    wire = WIRES[1]
    wire.text(server, "ok")
    model = wire.make(server, generate_kwargs={"temperature": 0}, top_k=5,
                      extra_body={"metadata": {"user_id": "u"}})
    await model(history())
    body = server.last.json
    assert (body["temperature"], body["top_k"], body["metadata"]) == (0, 5, {"user_id": "u"})
    assert body["max_tokens"] == 2048
