"""The game across nodes, in pieces: how a round asks a million players without holding
their answers, and how little each player keeps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from agentplex.message import Msg
from agentplex.runtime import ActorNotFound, NameRange, Runtime
from agentplex.sim.scenarios import guessing
from agentplex.sim.scenarios._crowd import MEMORY, Answers, CrowdPlayer, SeededPlayersModel
from agentplex.sim.scenarios._game import GameStats, Player

pytestmark = pytest.mark.anyio


class FakeAsk:
    """Answers a fan-out (what ``sim.call_many`` does) with each player's number as its
    guess; remembers the chunks and how many were in flight at once."""

    def __init__(self) -> None:
        self.chunks: list[list[str]] = []
        self.running = 0
        self.most = 0

    async def __call__(self, names: Sequence[str], msg: Msg) -> list[Any]:
        import asyncio

        self.chunks.append(list(names))
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        return [ActorNotFound("gone", actor=n) if n == "player-13" else
                Msg(n, "I guess", "assistant",
                    metadata={"guess": int(n.split("-")[1]) % 50, "tokens_out": 2})
                for n in names]


async def test_a_round_asks_in_striped_chunks_two_at_a_time(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setattr(guessing, "CHUNK", 100)
    names = NameRange("player-", 0, 1_000)  # placed in ranges: 250 per node on 4 nodes
    ask = FakeAsk()
    shown: list[Msg] = []
    answers = await guessing.ask_players(ask, names, names,  # type: ignore[arg-type]
                                         Msg("host", "guess", "user"), shown=shown)
    assert len(ask.chunks) == 10 and ask.most == 2
    assert sorted(n for c in ask.chunks for n in c) == sorted(names)  # everyone, once
    for chunk in ask.chunks:  # every node's range has its share of every chunk
        assert {int(n.split("-")[1]) // 250 for n in chunk} == {0, 1, 2, 3}
    assert len(shown) == answers.answered == 999
    assert list(answers.failed) == ["player-13"]
    assert answers.guesses[13] == 255 and answers.guesses[7] == 7
    assert answers.tokens_out == 2 * 999


def test_the_winners_are_the_closest_to_two_thirds_of_the_mean() -> None:
    names = [f"player-{i}" for i in range(6)]
    answers = Answers(bytearray([255] * 6))
    for i, guess in enumerate([30, 10, 20, 10, 255, 40]):
        if guess != 255:
            answers.take(i, names[i], Msg(names[i], "", "assistant",
                                          metadata={"guess": guess}))
    target, winners = answers.winners(names)
    assert target == pytest.approx(2 / 3 * 22)
    assert winners == ["player-1", "player-3"]  # 10 is closest to 14.67, and 20 is not
    assert Answers(bytearray()).winners([]) == (0.0, [])


async def test_a_crowd_player_keeps_a_few_lines_and_prompts_as_a_player_would() -> None:
    async with Runtime() as rt:
        crowd = CrowdPlayer(seed=3)
        await rt.spawn(crowd, "player-7")
        plain = Player("player-7", SeededPlayersModel(), GameStats(), seed=crowd.seed)
        for r in range(1, 6):
            question = Msg("host", f"Round {r}: make your guess.", "user",
                           metadata={"mode": "guess"})
            answer = await crowd.ref.call(question, timeout=10)
            assert "guess" in answer.metadata
            for m in (question, Msg("player-7", answer.get_text_content(), "assistant")):
                await plain.observe(m)
        assert len(crowd.lines) == MEMORY and all(type(x) is tuple for x in crowd.lines)
        assert crowd._heard() == [f"{m.name}: {m.get_text_content()}"
                                  for m in plain.memory[-MEMORY:]]
        state = crowd.state_dict()
        again = CrowdPlayer(seed=3)
        again.load_state_dict(state)
        assert again.lines == crowd.lines


async def test_the_players_wait_for_their_model_as_long_as_the_run_waits_for_them() -> None:
    """A run's ``--timeout`` is the players' too: at 10,000 players on one replica, their
    model calls timed out at a fixed 600 s while the run waited 1,500."""
    scenario = guessing.Guessing(guessing.Guessing.Params(model="transformers:default"),
                                 agents=3)
    scenario.timeout = 1500.0
    args = scenario.agent_args(0)
    assert args["timeout"] == 1500.0
    async with Runtime() as rt:
        player = CrowdPlayer(**args)
        await rt.spawn(player, "player-0")
        assert getattr(player.model, "timeout", None) == 1500.0
        assert CrowdPlayer(**{**args, "timeout": 5.0}).model is not player.model
