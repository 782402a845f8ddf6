"""Callers arriving one after another through a ModelActor against calling the model directly.

    .venv/bin/python benchmarks/bench_model_actor.py [--callers 16] [--gap 0.05] [--tokens 16]

The embedded local model (SmolLM2 through Transformers, dynamic batching). ``--callers``
requests arrive ``--gap`` seconds apart; each asks for ``--tokens`` new tokens. ``direct``
calls the model itself; ``model-actor`` calls it through a :class:`RemoteChatModel` and a
:class:`ModelActor` in the same process — so a request that arrives while a batch decodes
must reach the model at once (the actor serves up to ``max_concurrency`` requests together)
to join the next batch instead of queueing behind the running one. Figures: tokens/s of
wall-clock time from the first arrival to the last reply (the arrivals are paced in wall
time, so CPU time would not measure them), each implementation run ``--repeats`` times in
alternation; the best run of each is reported, with every run in ``runs``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import emit

TOPICS = ["a cat", "the sea", "a robot", "winter", "a city", "music", "a garden", "the moon"]


async def arrivals(model: Any, callers: int, gap: float, tokens: int) -> float:
    """Tokens per second for ``callers`` requests arriving ``gap`` seconds apart."""

    async def one(i: int) -> int:
        await asyncio.sleep(i * gap)
        prompt = [{"role": "user", "content": f"Write a short story about {TOPICS[i % 8]}."}]
        response = await model(prompt, max_tokens=tokens)
        return int(response.usage.output_tokens)

    start = time.perf_counter()
    produced = await asyncio.gather(*(one(i) for i in range(callers)))
    return sum(produced) / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--gap", type=float, default=0.05)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from agentplex.cluster import ModelActor, RemoteChatModel
    from agentplex.model import TransformersChatModel
    from agentplex.runtime import Runtime

    model = TransformersChatModel("default")
    async with Runtime() as rt:
        await rt.spawn(ModelActor(model), "model")
        remote = RemoteChatModel("model", timeout=600)
        await arrivals(model, 2, 0.0, 4)  # warm up
        runs: dict[str, list[float]] = {"direct": [], "model-actor": []}
        for _ in range(args.repeats):
            runs["direct"].append(await arrivals(model, args.callers, args.gap, args.tokens))
            runs["model-actor"].append(await arrivals(remote, args.callers, args.gap,
                                                      args.tokens))
    for impl, rates in runs.items():
        emit("arrivals", impl, args.callers, max(rates), "tokens/s",
             runs=[round(r, 1) for r in rates], gap_s=args.gap, max_tokens=args.tokens)
    emit("arrivals_ratio", "model-actor/direct", args.callers,
         max(runs["model-actor"]) / max(runs["direct"]), "x")


if __name__ == "__main__":
    asyncio.run(main())
