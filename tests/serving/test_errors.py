"""Errors in OpenAI's shape with the right status; keys, the queue bound, health, metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agentplex.model import ModelError, ScriptedChatModel, UnsupportedOptionError
from agentplex.serving import ModelServer

pytestmark = pytest.mark.anyio

openai = pytest.importorskip("openai")
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def http(server: ModelServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url.removesuffix("/v1"),
                                 timeout=10) as c:
        yield c


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert {"message", "type"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "echo", "messages": []}, "messages"),
    ({"model": "echo", "messages": HI, "temperature": 5}, "temperature"),
    ({"model": "echo", "messages": HI, "n": 2}, "n"),
    ({"model": "echo", "messages": HI, "top_logprobs": 2}, None),
    ({"model": "echo", "messages": HI, "tool_choice": "required"}, None),
    ({"model": "echo", "messages": [{"role": "tool", "content": "x"}]}, "messages.0"),
    ({"model": "echo", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}, None),
    ({"model": "echo", "messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1"}}]}]},
     "messages.0.tool_calls"),
    ({"model": "echo", "messages": [{"role": "tool", "tool_call_id": "nobody",
                                     "content": "x"}]}, "messages.0.tool_call_id"),
    ({"messages": HI}, "model"),
])
async def test_bad_requests_are_400(http: httpx.AsyncClient, body: dict[str, Any],
                                    param: str | None) -> None:
    got = await http.post("/v1/chat/completions", json=body)
    assert got.status_code == 400, got.text
    error = error_of(got)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


async def test_malformed_json_and_unknown_routes(http: httpx.AsyncClient) -> None:
    got = await http.post("/v1/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert got.status_code == 400 and error_of(got)["code"] == "invalid_json"
    missing = await http.get("/v1/nothing")
    assert missing.status_code == 404 and "no route" in error_of(missing)["message"]
    wrong = await http.get("/v1/chat/completions")
    assert wrong.status_code == 405
    error_of(wrong)


async def test_unknown_model_is_404(server: ModelServer) -> None:
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as c:
        with pytest.raises(openai.NotFoundError) as caught:
            await c.chat.completions.create(model="gpt-9", messages=HI)
    assert caught.value.code == "model_not_found"


async def test_model_errors_keep_their_meaning() -> None:
    def fail(messages: Any, **call: Any) -> Any:
        text = messages[-1].get_text_content()
        if text == "option":
            raise UnsupportedOptionError("no such mode", provider="p", model="m")
        if text == "model":
            raise ModelError("the engine broke", provider="p", model="m")
        raise RuntimeError("bug")

    model = ScriptedChatModel(fail)
    async with ModelServer(model, served_model_name="m") as srv, httpx.AsyncClient(
            base_url=srv.base_url, timeout=10) as http:
        statuses = {}
        for text in ("option", "model", "bug"):
            got = await http.post("/chat/completions", json={
                "model": "m", "messages": [{"role": "user", "content": text}]})
            statuses[text] = (got.status_code, error_of(got)["type"])
        assert statuses == {"option": (400, "invalid_request_error"),
                            "model": (500, "server_error"), "bug": (500, "server_error")}
        streamed = await http.post("/chat/completions", json={
            "model": "m", "stream": True, "messages": [{"role": "user", "content": "option"}]})
        assert streamed.status_code == 400


async def test_error_after_the_stream_started_arrives_as_an_event() -> None:
    class Breaks(ScriptedChatModel):
        async def _stream(self, *args: Any) -> Any:
            async for chunk in super()._stream(*args):
                yield chunk
                raise ModelError("lost the GPU", provider="p", model="m")

    model = Breaks(["one two three"], stream=True)
    async with ModelServer(model, served_model_name="m") as srv, httpx.AsyncClient(
            base_url=srv.base_url, timeout=10) as http:
        got = await http.post("/chat/completions", json={
            "model": "m", "stream": True, "messages": HI})
        assert got.status_code == 200
        events = [line.removeprefix("data: ") for line in got.text.split("\n\n") if line]
        assert events[-1] == "[DONE]"
        assert "lost the GPU" in json.loads(events[-2])["error"]["message"]


async def test_api_key() -> None:
    model = ScriptedChatModel(["ok"], cycle=True)
    async with ModelServer(model, served_model_name="m", api_key="s3cret") as srv:
        async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="wrong",
                                      max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError):
                await bad.chat.completions.create(model="m", messages=HI)
            with pytest.raises(openai.AuthenticationError):
                await bad.models.list()
        async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="s3cret",
                                      max_retries=0) as good:
            got = await good.chat.completions.create(model="m", messages=HI)
            assert got.choices[0].message.content == "ok"
        async with httpx.AsyncClient(base_url=srv.base_url.removesuffix("/v1")) as http:
            assert (await http.post("/v1/chat/completions", json={})).status_code == 401
            assert (await http.get("/health")).status_code == 200
            assert (await http.get("/metrics")).status_code == 200


async def test_full_queue_is_429_and_metrics_count_it() -> None:
    gate = asyncio.Event()

    async def slow(messages: Any, **call: Any) -> str:
        await gate.wait()
        return "done"

    model = ScriptedChatModel(slow)
    async with ModelServer(model, served_model_name="m", max_concurrency=1,
                           max_queue=1) as srv, httpx.AsyncClient(
            base_url=srv.base_url.removesuffix("/v1"), timeout=10) as http:
        body = {"model": "m", "messages": HI}
        running = asyncio.ensure_future(http.post("/v1/chat/completions", json=body))
        waiting = asyncio.ensure_future(http.post("/v1/chat/completions", json=body))
        for _ in range(500):
            health = (await http.get("/health")).json()
            if health["running"] == 1 and health["waiting"] == 1:
                break
            await asyncio.sleep(0.01)
        assert (health["running"], health["waiting"]) == (1, 1)
        metrics = (await http.get("/metrics")).text
        assert "agentplex_queue_length 1.0" in metrics
        refused = await http.post("/v1/chat/completions", json=body)
        assert refused.status_code == 429
        assert error_of(refused)["code"] == "queue_full"
        assert refused.headers["retry-after"] == "1"
        gate.set()
        assert [(await r).status_code for r in (running, waiting)] == [200, 200]
        metrics = (await http.get("/metrics")).text
        assert 'agentplex_requests_total{model="m",status="200"} 2.0' in metrics
        assert 'agentplex_requests_total{model="m",status="429"} 1.0' in metrics
        assert 'agentplex_time_to_first_token_seconds_count{model="m"} 2.0' in metrics
        assert 'agentplex_completion_tokens_total{model="m"} 2.0' in metrics
        assert "agentplex_queue_length 0.0" in metrics
