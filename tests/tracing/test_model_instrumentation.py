"""One ``chat`` span and one count per call of the model doing the work, through any wrappers."""

import json
from pathlib import Path
from typing import Any

import pytest

from agentplex.message import Msg
from agentplex.model import (
    ChatModelBase,
    FallbackModel,
    ProviderError,
    RateLimitedModel,
    RateLimiter,
    RetryingModel,
    RetryPolicy,
    ScriptedChatModel,
    collect,
)
from agentplex.tracing import Run, experiment

pytestmark = pytest.mark.anyio

HISTORY = [Msg("user", "hello there", "user")]  # 2 input "tokens" (words)
ANSWER = "the answer is 42"  # 4 output "tokens"


async def _no_sleep(_: float) -> None:
    return None


def failing(stream: bool) -> ScriptedChatModel:
    def script(messages: Any, **_: Any) -> str:
        raise ProviderError("down", provider="scripted", model="a")

    return ScriptedChatModel(script, stream=stream, model_name="a")


def stack(first: ChatModelBase, second: ChatModelBase) -> ChatModelBase:
    """Every wrapper at once: Retrying(RateLimited(Fallback(first, second)))."""
    limited = RateLimitedModel(FallbackModel(first, second), RateLimiter(1000.0, 10**6))
    return RetryingModel(limited, policy=RetryPolicy(2, sleep=_no_sleep))


def chat_spans(run: Run) -> list[dict[str, Any]]:
    spans = [json.loads(line) for line in (run.dir / "trace.jsonl").read_text().splitlines()]
    return [s for s in spans if s["name"].startswith("chat ")]


def totals(run: Run) -> dict[str, int]:
    manifest = json.loads((run.dir / "manifest.json").read_text())
    return dict(manifest["totals"])


@pytest.mark.parametrize("stream", [False, True])
async def test_a_stack_of_every_wrapper_traces_and_counts_each_model_call_once(
    tmp_path: Path, stream: bool
) -> None:
    a = ScriptedChatModel([ANSWER], stream=stream, model_name="a")
    b = ScriptedChatModel(["unused"], stream=stream, model_name="b")
    async with experiment("stack", runs_dir=tmp_path) as run:
        response = await collect(await stack(a, b)(HISTORY))
    assert response.text == ANSWER
    assert [s["name"] for s in chat_spans(run)] == ["chat a"]
    assert totals(run)["model_calls"] == 1
    assert (totals(run)["input_tokens"], totals(run)["output_tokens"]) == (2, 4)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_fallback_inside_the_stack_gives_one_span_per_model_tried(
    tmp_path: Path, stream: bool
) -> None:
    b = ScriptedChatModel([ANSWER], stream=stream, model_name="b")
    async with experiment("fallback", runs_dir=tmp_path / "rec") as run:
        response = await collect(await stack(failing(stream), b)(HISTORY))
    assert response.text == ANSWER
    spans = chat_spans(run)
    assert [s["name"] for s in spans] == ["chat a", "chat b"]
    assert [s["status"] for s in spans] == ["ERROR", "UNSET"]
    assert totals(run)["model_calls"] == 1  # the answered call; a's failure is not counted
    assert (totals(run)["input_tokens"], totals(run)["output_tokens"]) == (2, 4)

    # Replay takes the same path (a's failure is recorded too) without asking any model.
    unused = ScriptedChatModel([], stream=stream, model_name="b")
    never = ScriptedChatModel([], stream=stream, model_name="a")
    async with experiment("fallback", runs_dir=tmp_path / "replay",
                          replay=run.dir) as replayed:
        again = await collect(await stack(never, unused)(HISTORY))
    assert again.text == ANSWER
    assert never.calls == [] and unused.calls == []
    assert [s["name"] for s in chat_spans(replayed)] == ["chat a", "chat b"]
    assert totals(replayed)["model_calls"] == 1


async def test_a_retried_call_replays_its_failed_attempts(tmp_path: Path) -> None:
    pending = [ProviderError("busy", provider="scripted", model="m", retryable=True)]

    def script(messages: Any, **_: Any) -> str:
        if pending:
            raise pending.pop()
        return ANSWER

    flaky = ScriptedChatModel(script, model_name="m")
    model = RetryingModel(flaky, policy=RetryPolicy(2, sleep=_no_sleep))
    async with experiment("retry", runs_dir=tmp_path / "rec") as run:
        assert (await collect(await model(HISTORY))).text == ANSWER
    assert [s["name"] for s in chat_spans(run)] == ["chat m", "chat m"]
    assert totals(run)["model_calls"] == 1

    silent = ScriptedChatModel([], model_name="m")
    replay = RetryingModel(silent, policy=RetryPolicy(2, sleep=_no_sleep))
    async with experiment("retry", runs_dir=tmp_path / "replay", replay=run.dir) as replayed:
        assert (await collect(await replay(HISTORY))).text == ANSWER
    assert silent.calls == []
    assert len(chat_spans(replayed)) == 2  # the recorded failure is retried again


async def test_a_structured_call_is_keyed_by_its_whole_request(tmp_path: Path) -> None:
    """The key of a structured call digests the request with its schema, whatever text the
    request holds (here the mark the schema's text is spliced in at, too)."""
    from pydantic import BaseModel

    from agentplex.model._instrumentation import request_payload
    from agentplex.tracing._run import load_recording, request_key

    class Pick(BaseModel):
        """A pick, é."""

        number: int = 0

    mark = "\x00agentplex structured model\x00"
    model = ScriptedChatModel(['{"number": 3}'], cycle=True, model_name="a")
    histories = [[{"role": "user", "content": text}] for text in ("pick", mark, f'"{mark}"')]
    async with experiment("keys", runs_dir=tmp_path) as run:
        for history in histories:
            for structured in (Pick, None):
                await model(history, structured_model=structured, seed=1)
    expected = [request_key("a", [None, request_payload(
        {"messages": h, **({"structured_model": s} if s else {}), "seed": 1})])
        for h in histories for s in (Pick, None)]
    assert sorted(load_recording(run.dir)) == sorted(expected)
