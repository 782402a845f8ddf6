"""The cost ledger, prices and budgets: every model call counted per model, round and agent
class; hosted models priced offline; local models timed; a budget that says when to stop."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentplex import AgentBase, Msg, Runtime, ScriptedChatModel
from agentplex.model import ChatModelBase, ChatResponse, ChatUsage, collect
from agentplex.tracing import (
    PRICES_ENV,
    Budget,
    InvalidBudget,
    InvalidPrices,
    Ledger,
    LedgerEntry,
    Price,
    Prices,
    current_round,
    experiment,
    in_round,
    set_round,
)
from agentplex.tracing.lowlevel import DeviceClock
from tests.support import ROOT

pytestmark = pytest.mark.anyio

PRICES = {"openai:gpt-test": {"input_cost_per_token": 2e-06, "output_cost_per_token": 1e-05,
                              "cache_read_input_token_cost": 5e-07}}


class CachingModel(ChatModelBase):
    """A hosted-style model whose every answer used 100 prompt tokens (40 from the cache)
    and 10 output tokens."""

    provider = "openai"

    def __init__(self) -> None:
        super().__init__("gpt-test")

    async def _call(self, messages: Any, tools: Any, tool_choice: Any, structured_model: Any,
                    **kwargs: Any) -> ChatResponse:
        return ChatResponse(content=[], usage=ChatUsage(input_tokens=100, output_tokens=10,
                                                        cached_input_tokens=40))


class Voter(AgentBase):
    """Asks a scripted (local) model."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model = ScriptedChatModel(["yes"], cycle=True, model_name="local-m")
        self.set_console_output_enabled(False)

    async def reply(self, msg: Msg | None = None) -> Msg:
        await collect(await self.model([{"role": "user", "content": "vote now"}]))
        return Msg(self.name, "voted", "assistant")


class Pundit(AgentBase):
    """Asks a priced hosted-style model."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model = CachingModel()
        self.set_console_output_enabled(False)

    async def reply(self, msg: Msg | None = None) -> Msg:
        await self.model([{"role": "user", "content": "comment"}])
        return Msg(self.name, "said", "assistant")


def entry(**kw: Any) -> LedgerEntry:
    return LedgerEntry(**{"provider": "openai", "model": "gpt-test", **kw})


# -- the ledger -----------------------------------------------------------------------------

def test_ledgers_add_up_and_travel_as_json() -> None:
    a = Ledger(entries=[entry(round=1, agent_class="V", calls=2, input_tokens=20,
                              output_tokens=4, cpu_s=0.5)])
    b = Ledger(entries=[entry(round=1, agent_class="V", calls=1, input_tokens=10,
                              output_tokens=2, cpu_s=0.25),
                        entry(round=2, agent_class="P", calls=1, input_tokens=7)])
    both = a + b
    assert both == Ledger.merge(a, b) == Ledger.merge(b, a)
    assert [(e.round, e.agent_class, e.calls, e.input_tokens, e.cpu_s)
            for e in both.entries] == [(1, "V", 3, 30, 0.75), (2, "P", 1, 7, 0.0)]
    assert Ledger.model_validate_json(both.model_dump_json()) == both
    assert both.total().calls == 4 and both.total().tokens == 43
    assert both.by_round()[1].calls == 3 and both.by_agent_class()["P"].input_tokens == 7
    assert not Ledger() and bool(both)


async def test_a_run_counts_per_model_round_and_agent_class(tmp_path: Path) -> None:
    table = Prices(PRICES, litellm=False)
    async with experiment("costs", runs_dir=tmp_path) as run, Runtime():
        voters = [Voter(f"v{i}") for i in range(3)]
        pundit = Pundit("p")
        with in_round(1):
            assert current_round() == 1
            await asyncio.gather(*(v(Msg("user", "go", "user")) for v in voters))
            await pundit(Msg("user", "go", "user"))
        with in_round(2):
            await voters[0](Msg("user", "go", "user"))
        assert current_round() is None
        await CachingModel()([{"role": "user", "content": "outside any agent"}])
        ledger = run.ledger
    rounds = ledger.by_round()
    assert {r: u.calls for r, u in rounds.items()} == {1: 4, 2: 1, None: 1}
    classes = ledger.by_agent_class()
    assert {c: u.calls for c, u in classes.items()} == {"Voter": 4, "Pundit": 1, None: 1}
    models = ledger.by_model()
    assert models[("openai", "gpt-test")].cached_tokens == 80
    assert models[("scripted", "local-m")].output_tokens == 4
    assert models[("scripted", "local-m")].cpu_s > 0  # a local model's device time
    assert models[("openai", "gpt-test")].cpu_s == 0  # a hosted one has none
    # two calls of 60 fresh, 40 cached, 10 output tokens
    assert table.cost(ledger) == pytest.approx(2 * (60 * 2e-06 + 40 * 5e-07 + 10 * 1e-05))
    totals = json.loads((run.dir / "manifest.json").read_text())["totals"]
    assert totals["model_calls"] == 6 and totals["cached_tokens"] == 80
    assert [(r["round"], r["calls"]) for r in totals["by_round"]] == [
        (None, 1), (1, 4), (2, 1)]
    assert {r["agent_class"]: r["calls"] for r in totals["by_agent_class"]} == {
        "Voter": 4, "Pundit": 1, None: 1}
    local = next(r for r in totals["by_model"] if r["provider"] == "scripted")
    assert local["cost_usd"] is None and local["unpriced_calls"] == 4  # no price, not 0


async def test_set_round_holds_for_the_rest_of_the_task() -> None:
    async def body() -> list[int | None]:
        seen = [current_round()]
        set_round(3)
        seen.append(current_round())
        set_round(None)
        seen.append(current_round())
        return seen

    assert await asyncio.create_task(body()) == [None, 3, None]
    with pytest.raises(ValueError):
        set_round(-1)


async def test_concurrent_calls_share_the_device_time_they_overlap() -> None:
    """Four calls batched together: their shares add up to the time the model was busy
    (at most the time they all took), not four times it."""
    clock = DeviceClock()

    async def call() -> float:
        started = clock.start()
        await asyncio.sleep(0.05)
        return clock.stop(started)

    began = time.perf_counter()
    shares = await asyncio.gather(*(call() for _ in range(4)))
    elapsed = time.perf_counter() - began
    assert all(s > 0 for s in shares)
    assert sum(shares) <= elapsed + 1e-9


def test_a_journaled_node_ledger_adds_up_with_rounds_from_the_driver(
        tmp_path: Path) -> None:
    """A node process's agents charge the round the driver set, under their own class;
    the driver's manifest holds them."""
    driver = '''
import asyncio, json, signal, subprocess, sys
from agentplex import Msg, connect
from agentplex.tracing import experiment, in_round

async def main(out):
    async with experiment("nodes", runs_dir=out) as run, connect() as rt:
        node = subprocess.Popen([sys.executable, "-m", "tests.support.traced_node",
                                 rt.transport.endpoint, "node-w", "worker", f"{out}/w.jsonl"],
                                stdout=subprocess.PIPE, text=True)
        try:
            line = await asyncio.to_thread(node.stdout.readline)
            assert line.strip() == "ready", line
            worker = rt.ref("worker")
            with in_round(1):
                for _ in range(2):
                    await worker.call(Msg("user", "?", "user"), timeout=30)
            with in_round(2):
                await worker.call(Msg("user", "?", "user"), timeout=30)
        finally:
            node.send_signal(signal.SIGTERM)
            await asyncio.to_thread(node.wait, 20)
    print(run.dir)

asyncio.run(main(sys.argv[1]))
'''
    proc = subprocess.run([sys.executable, "-c", driver, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    totals = json.loads((Path(proc.stdout.strip()) / "manifest.json").read_text())["totals"]
    assert totals["model_calls"] == 3
    assert [(r["round"], r["calls"]) for r in totals["by_round"]] == [(1, 2), (2, 1)]
    assert [(r["agent_class"], r["calls"]) for r in totals["by_agent_class"]] == [
        ("Worker", 3)]
    assert [(r["provider"], r["model"]) for r in totals["by_model"]] == [("scripted", "oracle")]


# -- prices ---------------------------------------------------------------------------------

def test_prices_come_from_your_file_then_litellms_table(tmp_path: Path) -> None:
    own = tmp_path / "prices.json"
    own.write_text(json.dumps({"openai:gpt-4o": {"input_cost_per_token": 1e-06,
                                                 "output_cost_per_token": 2e-06},
                               "my-model": {"input_cost_per_token": 3e-06}}))
    table = Prices(own)
    assert table.price("openai", "gpt-4o") == Price(input_cost_per_token=1e-06,
                                                    output_cost_per_token=2e-06)
    assert table.price("anthropic", "my-model") == Price(input_cost_per_token=3e-06)
    assert table.price("openai", "no-such-model-anywhere") is None  # no price, not 0
    assert table.price("transformers", "gpt-4o") is None  # local: device seconds instead
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("litellm (the agentplex[providers] extra) is not installed")
    shipped = json.loads((Path(spec.submodule_search_locations[0])
                          / "model_prices_and_context_window_backup.json").read_text())
    # whatever models the installed table lists: an Anthropic one under its own name, a
    # Gemini one under "gemini/<name>"
    for provider, prefix in (("anthropic", ""), ("gemini", "gemini/")):
        name, expected = next(
            (k, v) for k, v in shipped.items()
            if isinstance(v, dict) and v.get("litellm_provider") == provider
            and k.startswith(prefix) and "/" not in k[len(prefix):]
            and v.get("input_cost_per_token"))
        found = Prices().price(provider, name[len(prefix):])
        assert found is not None, name
        assert found.input_cost_per_token == expected["input_cost_per_token"]
        assert found.output_cost_per_token == expected.get("output_cost_per_token", 0.0)


def test_the_table_is_read_without_importing_litellm(tmp_path: Path) -> None:
    if importlib.util.find_spec("litellm") is None:
        pytest.skip("litellm is not installed")
    code = ("import sys; from agentplex.tracing import Prices; "
            "p = Prices().price('openai', 'gpt-4o'); "
            "print(p is not None and p.input_cost_per_token > 0, 'litellm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_a_price_file_from_the_environment(tmp_path: Path) -> None:
    own = tmp_path / "prices.json"
    own.write_text(json.dumps(PRICES))
    code = ("from agentplex.tracing import prices; "
            "print(prices().price('openai', 'gpt-test').output_cost_per_token)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, check=True,
                         env={**os.environ, PRICES_ENV: str(own)})
    assert float(out.stdout) == 1e-05


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"m": 3}',
                                     '{"m": {"input_cost_per_token": "free"}}',
                                     '{"m": {"input_cost_per_token": -1}}'])
def test_a_bad_price_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    own = tmp_path / "prices.json"
    own.write_text(content)
    with pytest.raises(InvalidPrices, match="price"):
        Prices(own)
    with pytest.raises(InvalidPrices, match="cannot read"):
        Prices(tmp_path / "missing.json")


# -- budgets --------------------------------------------------------------------------------

def test_a_budget_says_why_a_ledger_is_over_it() -> None:
    table = Prices(PRICES, litellm=False)
    ledger = Ledger(entries=[entry(calls=10, input_tokens=1000, output_tokens=100),
                             entry(provider="scripted", model="m", calls=5, input_tokens=50)])
    assert Budget().exceeded(ledger) is None and not Budget().limited
    assert Budget(max_tokens=2000, prices=table).exceeded(ledger) is None
    reason = Budget(max_tokens=1150, prices=table).exceeded(ledger)
    assert reason is not None and "1,150 tokens" in reason
    # 1000 * 2e-06 + 100 * 1e-05 = $0.003; the scripted model has no price
    assert Budget(max_cost_usd=0.01, prices=table).exceeded(ledger) is None
    reason = Budget(max_cost_usd=0.003, prices=table).exceeded(ledger)
    assert reason is not None and "$0.0030" in reason and "5 calls" in reason
    unpriced = Ledger(entries=[entry(provider="scripted", model="m", calls=9,
                                     input_tokens=10**9)])
    assert Budget(max_cost_usd=0.0, prices=table).exceeded(unpriced) is None


@pytest.mark.parametrize("kwargs", [{"max_cost_usd": -1}, {"max_tokens": -5},
                                    {"max_cost_usd": float("nan")}, {"max_tokens": "10"},
                                    {"max_tokens": True}])
def test_a_bad_budget_is_a_clear_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidBudget):
        Budget(**kwargs)


def test_a_bad_price_file_in_the_environment_costs_no_manifest(tmp_path: Path) -> None:
    own = tmp_path / "prices.json"
    own.write_text("{not json")
    code = '''
import asyncio, sys
from agentplex import ScriptedChatModel
from agentplex.tracing import experiment

async def main():
    async with experiment("bad-prices", runs_dir=sys.argv[1]) as run:
        await ScriptedChatModel(["hi"])([{"role": "user", "content": "x"}])
    print(run.dir)

asyncio.run(main())
'''
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=60, cwd=ROOT, env={**os.environ, PRICES_ENV: str(own)})
    assert out.returncode == 0, out.stderr
    totals = json.loads((Path(out.stdout.strip()) / "manifest.json").read_text())["totals"]
    assert totals["model_calls"] == 1 and "is not JSON" in totals["prices_error"]


async def test_a_resumed_run_takes_in_its_past_ledger(tmp_path: Path) -> None:
    past = Ledger(entries=[entry(round=1, agent_class="Pundit", calls=1, input_tokens=100,
                                 output_tokens=10, cached_tokens=40)])
    async with experiment("resumed", runs_dir=tmp_path) as run, Runtime():
        run.merge_ledger(past)
        with in_round(2):
            await Pundit("p")(Msg("user", "go", "user"))
        ledger = run.ledger
    assert {r: u.calls for r, u in ledger.by_round().items()} == {1: 1, 2: 1}
    assert ledger.by_agent_class()["Pundit"].cached_tokens == 80
