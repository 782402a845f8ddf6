"""Token log-probabilities from every provider whose wire returns them; the others refuse.

OpenAI's and Hugging Face's clients read them from ``agentplex serve`` (a real server of
the OpenAI wire); Gemini and Ollama from the loopback fake speaking their wires.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentplex.model import UnsupportedOptionError
from tests.support.model_inputs import history
from tests.support.provider_server import FakeServer
from tests.support.provider_wires import AnthropicWire, GeminiWire, OllamaWire
from tests.support.results import as_response, as_stream

pytestmark = pytest.mark.anyio
EXPECTED = [("a", -0.1, [("a", -0.1)]), (" b", -0.5, [])]


def entries(response: Any) -> list[tuple[str, float, list[tuple[str, float]]]]:
    return [(e.token, e.logprob, [(t.token, t.logprob) for t in e.top_logprobs])
            for e in response.logprobs]


@pytest.fixture
async def served() -> AsyncIterator[str]:
    pytest.importorskip("uvicorn")
    from agentplex.serving import ModelServer
    from tests.support.serving_models import LogprobModel

    async with ModelServer(LogprobModel("lp", stream=True), served_model_name="lp") as srv:
        yield srv.base_url


@pytest.mark.parametrize("provider", ["openai", "huggingface"])
async def test_openai_wire_clients(served: str, provider: str) -> None:
    pytest.importorskip("openai")
    from agentplex.model import init_chat_model

    options: dict[str, Any] = {"base_url": served if provider == "openai"
                               else served.removesuffix("/v1")}
    model = init_chat_model(f"{provider}:lp", **options)
    got = await model(history(), logprobs=True, top_logprobs=1)
    assert entries(got) == EXPECTED
    assert as_response(await model(history())).logprobs is None
    streaming = init_chat_model(f"{provider}:lp", stream=True, **options)
    chunks = [c async for c in as_stream(await streaming(history(), logprobs=True))]
    assert entries(chunks[-1]) == EXPECTED
    assert chunks[0].logprobs is not None
    assert len(chunks[0].logprobs) == 1  # each chunk carries those so far, like content
    await model.aclose()  # type: ignore[attr-defined]
    await streaming.aclose()  # type: ignore[attr-defined]


async def test_gemini(server: FakeServer) -> None:
    wire = GeminiWire()
    body = wire.answer([{"text": "a b"}])
    body["candidates"][0]["logprobsResult"] = {
        "chosenCandidates": [{"token": "a", "logProbability": -0.1},
                             {"token": " b", "logProbability": -0.5}],
        "topCandidates": [{"candidates": [{"token": "a", "logProbability": -0.1}]},
                          {"candidates": []}]}
    server.json(body)
    got = await wire.make(server)(history(), logprobs=True, top_logprobs=1)
    assert entries(got) == EXPECTED
    config = server.last.json["generationConfig"]
    assert config["responseLogprobs"] is True and config["logprobs"] == 1


async def test_ollama(server: FakeServer) -> None:
    wire = OllamaWire()
    parts = [wire.part({"content": "a"}, done=False), wire.part({"content": " b"}, done=False),
             wire.part({"content": ""})]
    parts[0]["logprobs"] = [{"token": "a", "logprob": -0.1,
                             "top_logprobs": [{"token": "a", "logprob": -0.1}]}]
    parts[1]["logprobs"] = [{"token": " b", "logprob": -0.5, "top_logprobs": []}]
    server.stream([json.dumps(p) + "\n" for p in parts], content_type="application/x-ndjson")
    chunks = [c async for c in as_stream(await wire.make(server, stream=True)(
        history(), logprobs=True, top_logprobs=1))]
    assert entries(chunks[-1]) == EXPECTED
    assert (server.last.json["logprobs"], server.last.json["top_logprobs"]) == (True, 1)


async def test_providers_without_logprobs_refuse(server: FakeServer) -> None:
    with pytest.raises(UnsupportedOptionError, match="log-probabilities"):
        await AnthropicWire().make(server)(history(), logprobs=True)
    assert not server.requests
