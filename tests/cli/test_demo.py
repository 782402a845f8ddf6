"""The main job in its fast form, end to end, as a user runs it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def test_demo_plays_reports_and_writes_a_trace(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentplex", "demo", "--agents", "3", "--rounds", "2",
         "--model", "scripted", "--runs-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # a small game prints each answer as it comes; the game is a run of the scenario
    for player in ("player-0", "player-1", "player-2"):
        assert f"{player}: I guess" in out
    assert re.search(r"round 2: 3/3 answered in [\d.]+s; target [\d.]+", out)
    assert "Guessing: 3 players in this process" in out and "run summary" in out
    traces = list(tmp_path.glob("*/trace.jsonl"))
    assert len(traces) == 1 and str(traces[0]) in out.replace("\n", "")
    spans = [json.loads(line) for line in traces[0].read_text().splitlines()]
    names = {s["name"] for s in spans}
    assert "invoke_agent player-0" in names and "chat scripted-players" in names
    assert {"round 1", "round 2"} <= names
    # the summary counts the messages the transcript holds: each round's call, guesses
    # and outcome, then the closing question and sentences
    transcript = (traces[0].parent / "transcript.jsonl").read_text().splitlines()
    row = re.search(r"│\s+3\s+│\s+(\d+)\s+│", out)
    assert row is not None and int(row.group(1)) == len(transcript) == 1 + 2 * (1 + 3 + 1) + 3


def test_demo_rejects_bad_options() -> None:
    proc = subprocess.run([sys.executable, "-m", "agentplex", "demo", "--agents", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "agents" in (proc.stderr + proc.stdout).lower()
    proc = subprocess.run([sys.executable, "-m", "agentplex", "demo", "--model", "scripted",
                           "-o", "max_batch_size"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "KEY=VALUE" in proc.stderr + proc.stdout


def test_slow_rates_keep_their_digits() -> None:
    from agentplex.cli._demo import rate_text

    assert [rate_text(x) for x in (0.37, 3.04, 12.6, 11_279.4)] == ["0.37", "3", "13", "11,279"]


def test_model_options_are_json_or_text() -> None:
    from agentplex.cli._serve import parse_options

    assert parse_options(["max_batch_size=256", "temperature=0.5", "device=cuda:1",
                          "stop=[\"x\"]"]) == {"max_batch_size": 256, "temperature": 0.5,
                                              "device": "cuda:1", "stop": ["x"]}


def test_demo_model_options_reach_the_model(tmp_path: Path) -> None:
    """``--option`` goes to ``init_chat_model`` (a scripted model refuses an unknown one)."""
    proc = subprocess.run(
        [sys.executable, "-m", "agentplex", "demo", "--agents", "2", "--rounds", "1",
         "--model", "scripted:hello", "--option", "no_such_option=1",
         "--runs-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "no_such_option" in proc.stderr + proc.stdout


def _without_openai_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}


@pytest.mark.parametrize("command", [["demo", "--model"], ["demo", "--nodes", "2", "--model"],
                                     ["serve", "--port", "0"]])
def test_a_model_that_cannot_be_built_is_one_line_not_a_traceback(
    tmp_path: Path, command: list[str]
) -> None:
    proc = subprocess.run([sys.executable, "-m", "agentplex", *command, "openai:gpt-4o-mini"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env=_without_openai_settings())
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "[openai:gpt-4o-mini] no API key" in proc.stderr
    assert "OPENAI_API_KEY" in proc.stderr


def test_a_failing_model_call_is_reported_with_its_provider(tmp_path: Path) -> None:
    """The error names the model as ``[provider:model]``, which the console must print as
    text (as markup, rich dropped it)."""
    env = {**_without_openai_settings(), "OPENAI_API_KEY": "k", "COLUMNS": "400",
           "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}  # nothing listens: refused at once
    proc = subprocess.run(
        [sys.executable, "-m", "agentplex", "demo", "--agents", "2", "--rounds", "1",
         "--model", "openai:gpt-4o-mini", "--runs-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1
    assert "the demo failed" in proc.stderr
    assert "[openai:gpt-4o-mini] connection failed" in proc.stderr


@pytest.mark.anyio
async def test_players_prompts_keep_the_newest_within_budget() -> None:
    from agentplex.message import Msg
    from agentplex.model.lowlevel import estimate_tokens
    from agentplex.sim.scenarios._crowd import SeededPlayersModel
    from agentplex.sim.scenarios._game import GameStats, Player

    player = Player("Player1", SeededPlayersModel(), GameStats(), max_input_tokens=120)
    for i in range(40):
        await player.observe(Msg(f"Player{i % 3 + 2}", f"round note {i} " + "blah " * 6, "user"))
    system, user = await player._prompt("Your guess?")
    assert "round note 39" in user["content"] and "round note 0 " not in user["content"]
    assert user["content"].endswith("Your guess? You are Player1.")  # who asks: last
    assert estimate_tokens([system, user]) <= 120


@pytest.mark.anyio
async def test_players_of_one_persona_differ_only_in_their_names_at_the_end() -> None:
    """What a local engine computes once for all the players of a round (its prefix cache)
    is what their prompts share: all but who the player is, last."""
    from agentplex.message import Msg
    from agentplex.sim.scenarios._crowd import SeededPlayersModel
    from agentplex.sim.scenarios._game import PERSONAS, GameStats, Player

    players = [Player(f"player-{i}", SeededPlayersModel(), GameStats(), persona=PERSONAS[0])
               for i in (7, 1234)]
    question = Msg("host", "Round 1: make your guess.", "user")
    prompts = []
    for p in players:
        await p.observe(question)
        prompts.append((await p._prompt("Reply with your guess as JSON."))[1]["content"])
    head = "host: Round 1: make your guess.\n\n" + PERSONAS[0] + \
        " Reply with your guess as JSON. You are player-"
    assert prompts == [head + "7.", head + "1234."]


@pytest.mark.anyio
async def test_a_prompt_known_to_fit_is_the_prompt_fit_keeps() -> None:
    from agentplex.message import Msg
    from agentplex.model import ScriptedChatModel
    from agentplex.sim.scenarios._crowd import SeededPlayersModel
    from agentplex.sim.scenarios._game import GameStats, Player

    class Counted(ScriptedChatModel):  # counts as the others do, but not known to
        async def count_tokens(self, *args: Any, **kwargs: Any) -> int:
            return await super().count_tokens(*args, **kwargs)

    players = [Player("Player1", model, GameStats(), max_input_tokens=budget)
               for model in (SeededPlayersModel(), Counted([]))
               for budget in (320, 120)]
    for player in players:
        for i in range(12):
            await player.observe(Msg(f"Player{i % 3 + 2}", f"note {i} " + "blah " * 6, "user"))
    prompts = [await p._prompt("Your guess?") for p in players]
    assert prompts[0] == prompts[2] and prompts[1] == prompts[3] and prompts[0] != prompts[1]
    assert [p.context.dropped for p in players] == [0, 9, 0, 9]


@pytest.mark.timeout(600)
def test_the_main_job_on_the_embedded_model(tmp_path: Path) -> None:
    """`make demo` as the README runs it, made small: the embedded model, no key, no network."""
    proc = subprocess.run(
        [sys.executable, "-m", "agentplex", "demo", "--agents", "2", "--rounds", "1",
         "--no-discussion", "-o", "max_batch_size=8", "--runs-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "player-0: I guess" in out and "player-1: I guess" in out
    assert "local model: prefill" in out and "decode" in out  # where the model's time went
    (manifest,) = tmp_path.glob("*/manifest.json")
    totals = json.loads(manifest.read_text())
    assert "transformers:default" in manifest.read_text() and totals
