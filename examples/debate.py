"""A debate: two debaters take turns in a MsgHub, then a judge decides.

Each agent hears everything said in the hub; the judge answers with a structured verdict.

    python examples/debate.py --rounds 2                      # the embedded local model
    python examples/debate.py --model scripted                # no model at all (fast)
    python examples/debate.py --model openai:gpt-4o-mini      # any init_chat_model string
"""

from __future__ import annotations

import argparse
import asyncio
import json

from pydantic import BaseModel, Field

from agentplex import AgentBase, Msg, MsgHub, Runtime, ScriptedChatModel, init_chat_model
from agentplex.model import ChatModelBase, collect

TOPIC = "Should a city replace its buses with free bicycles?"


class Verdict(BaseModel):
    """The judge's decision."""

    winner: str = Field(description="'Pro' or 'Con'")
    reason: str = Field(description="one sentence")


class Speaker(AgentBase):
    """An agent that speaks from its own point of view about what it has heard."""

    def __init__(self, name: str, stance: str, model: ChatModelBase) -> None:
        super().__init__(name)
        self.stance = stance
        self.model = model
        self.heard: list[Msg] = []

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        if isinstance(msg, Msg):
            self.heard.append(msg)

    def prompt(self, instruction: str) -> list[dict[str, str]]:
        said = "\n".join(f"{m.name}: {m.get_text_content()}" for m in self.heard[-6:])
        return [{"role": "system", "content": f"You are {self.name}. {self.stance}"},
                {"role": "user", "content": f"Debate: {TOPIC}\n{said}\n{instruction}"}]

    async def reply(self, msg: Msg | None = None) -> Msg:
        response = await collect(await self.model(self.prompt("Your turn, in two sentences."),
                                                  max_new_tokens=60))
        out = Msg(self.name, " ".join(response.text.split()) or "(silence)", "assistant")
        await self.print(out)
        return out


class Judge(Speaker):
    async def reply(self, msg: Msg | None = None) -> Msg:
        response = await collect(await self.model(self.prompt("Who argued better?"),
                                                  structured_model=Verdict,
                                                  max_new_tokens=80))
        verdict = Verdict.model_validate(response.metadata or json.loads(response.text))
        out = Msg(self.name, f"{verdict.winner} wins: {verdict.reason}", "assistant",
                  metadata=verdict.model_dump())
        await self.print(out)
        return out


def scripted() -> ChatModelBase:
    lines = iter(["Buses carry many people at once.", "Bicycles are free and healthy.",
                  "Not everyone can ride a bicycle.", "Fewer buses means cleaner air."])

    def answer(messages: list[dict[str, str]], *, structured_model: object = None,
               **_: object) -> str:
        if structured_model is not None:
            return json.dumps({"winner": "Pro", "reason": "Cleaner air won the room."})
        return next(lines, "I rest my case.")

    return ScriptedChatModel(answer, model_name="scripted-debate")


async def debate(model: ChatModelBase, rounds: int) -> Msg:
    async with Runtime():
        pro = Speaker("Pro", "You argue for the proposal.", model)
        con = Speaker("Con", "You argue against the proposal.", model)
        judge = Judge("Judge", "You are a fair judge.", model)
        async with MsgHub([pro, con, judge], announcement=Msg("host", TOPIC, "system")):
            for _ in range(rounds):
                await pro()
                await con()
            return await judge()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="transformers:default")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = scripted() if args.model == "scripted" else init_chat_model(args.model)
    verdict = asyncio.run(debate(model, args.rounds))
    print(f"verdict: {verdict.metadata}")


if __name__ == "__main__":
    main()
