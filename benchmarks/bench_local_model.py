"""Local model benchmark: batched throughput, load times and the cost of constrained decoding.

Prints one JSON line per figure: ``{"bench", "impl", "n", "value", "unit"}``.

* ``throughput``: generated tokens per second for N concurrent callers of one
  :class:`TransformersChatModel` (dynamic batching), against the same model served one
  request at a time with ``model.generate`` (how smolagents' ``TransformersModel`` and
  AgentScope use a local model), Transformers' own continuous batching (``generate_batch``,
  an offline batch API), and, when ``--llama-server URL`` is given, llama.cpp's
  OpenAI-compatible server on the same GGUF file. On a CPU, the same model with int8
  weights (``quantize="int8"``) right after float32 at each N, and with bf16 weights.
* ``quality``: int8 and int4 weights against float32: perplexity on a fixed public-domain
  text (``tests/support/texts``), and on the demo game's prompts the share of greedy answers
  identical to float32's, and of valid JSON guesses (greedy unconstrained; the demo's own
  constrained, sampled calls).
* ``weights``: the same engine with float32, int8 (``quantize="int8"``), int4
  (``quantize="int4"``) and bf16 weights at each N, taken in turn ``--repeats`` times (so
  that a shared machine's noise hits them alike): median tokens per wall second and per CPU
  second of the process, and each one's ratios to float32; with ``--llama-server URL``,
  llama.cpp's server in the same turns.
* ``load``: cold (GGUF → safetensors conversion) and warm (from the cache) load time, each in a
  fresh process, imports excluded.
* ``constrained``: milliseconds per generated token with and without a JSON schema.
* ``prefix``: time to first token of 16 agents sharing a 1,000-token system prompt, with
  and without prefix reuse (a fresh cache: the 16 arrive together and the shared part is
  computed once), and a second turn of the same agents (each history extends its first).
  Wall seconds and the process's CPU seconds (what a shared machine cannot distort).
* ``demo``: the demo game's rounds (``agentplex demo``: players sharing the local model,
  guessing in JSON each round) with and without prefix reuse, the two in turn; each round's
  wall and CPU seconds.
* ``chunked``: p95 gap between tokens of 8 decoding requests, alone and while a 2,000-token
  prompt joins — prefilled in chunks, and (for contrast) in one piece.
* ``steps``: the engine's host overhead per decode step. For N concurrent callers (greedy, then
  sampled), generated tokens per wall second and per CPU second of the process, ours (through
  the chat model and an event loop, and the engine given the N requests at once) against
  ``generate_batch`` on the same model; the ratios; and the engine's seconds per step split
  into the forward pass, choosing tokens and the rest.
* ``--tiny``: swap the model for a random-weight one of the embedded model's architecture and
  vocabulary with 2 layers of width 64 (``--tiny-layers``, ``--tiny-hidden``). Its forward
  pass is cheap, so the engine's Python per step decides throughput, as for a small model on
  a GPU (launch-bound). Default ``--parts steps --ns 16,64,256``, ``--max-batch`` the largest N.

Usage: ``python benchmarks/bench_local_model.py [--tokens 32] [--ns 1,4,16,64]
[--parts load,throughput,quality,constrained,prefix,demo,chunked] [--chunked-repeats 3]
[--chunked-variants alone,join-chunked,join-one-piece] [--model PATH] [--max-batch 64]
[--tiny] [--repeats 3]``.
On a GPU the model loads in bf16 on CUDA (the separate bf16 row is then skipped); ``--model``
takes a model folder instead of the embedded default.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field

from _benchlib import emit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support

TOPICS = ["a cat", "the sea", "a robot", "winter", "a city", "music", "a garden", "the moon"]


def prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a short story about {TOPICS[i % 8]} ({i})."}]


def load_in_fresh_process(cache_dir: str) -> float:
    code = (
        "import time, agentplex.model.local as l, transformers, torch\n"
        "t = time.perf_counter()\n"
        f"l.load_local_model('default', cache_dir={cache_dir!r})\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True)
    return float(out.stdout.strip().splitlines()[-1])


async def batched(model: Any, n: int, tokens: int) -> float:
    start = time.perf_counter()
    results = await asyncio.gather(*(model(prompt(i), max_tokens=tokens) for i in range(n)))
    wall = time.perf_counter() - start
    tokens_out: int = sum(r.usage.output_tokens for r in results)
    return tokens_out / wall


def one_at_a_time(model: Any, n: int, tokens: int) -> float:
    import torch

    tok, hf = model.tokenizer, model.model
    generated, start = 0, time.perf_counter()
    for i in range(n):
        ids = tok(model.format_prompt(prompt(i)), return_tensors="pt",
                  add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            out = hf.generate(ids, max_new_tokens=tokens, do_sample=False,
                              pad_token_id=tok.pad_token_id)
        generated += out.shape[1] - ids.shape[1]
    return generated / (time.perf_counter() - start)


def hf_continuous_batching(model: Any, n: int, tokens: int) -> float:
    run = theirs(model, n, tokens, sampled=False)
    return run["tokens"] / run["wall"]


def llama_server(url: str, n: int, tokens: int) -> float:
    import concurrent.futures
    import urllib.request

    def one(i: int) -> int:
        body = json.dumps({"messages": prompt(i), "max_tokens": tokens, "temperature": 0})
        request = urllib.request.Request(f"{url}/v1/chat/completions", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as reply:
            return int(json.loads(reply.read())["usage"]["completion_tokens"])

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        total = sum(pool.map(one, range(n)))
    return total / (time.perf_counter() - start)


class Story(BaseModel):
    title: Annotated[str, Field(max_length=40)]
    characters: Annotated[list[Annotated[str, Field(max_length=20)]], Field(max_length=3)]
    year: Annotated[int, Field(ge=0, le=3000)]
    happy_ending: bool


async def per_token_ms(model: Any, n: int, tokens: int, constrained: bool) -> tuple[float, float]:
    """End-to-end ms per decode step, and the token-choosing part of it, for ``n`` callers."""
    kwargs: dict[str, Any] = {"max_tokens": tokens}
    if constrained:
        kwargs["structured_model"] = Story
    engine = model.engine
    steps, select = engine.counters.steps, engine.counters.select_seconds
    start = time.perf_counter()
    await asyncio.gather(*(model(prompt(i), **kwargs) for i in range(n)))
    wall = time.perf_counter() - start
    count = engine.counters.steps - steps
    return 1000 * wall / count, 1000 * (engine.counters.select_seconds - select) / count


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--ns", default=None, help="callers (1,4,16,64; --tiny: 16,64,256)")
    parser.add_argument("--sequential", type=int, default=4,
                        help="requests timed for the one-at-a-time baseline")
    parser.add_argument("--llama-server", default=None, help="base URL of llama.cpp's server")
    parser.add_argument("--parts", default=None,
                        help="load,throughput,constrained (--tiny: steps); also quality, "
                        "weights, prefix, demo, chunked")
    parser.add_argument("--model", default="default", help="a model folder (default: embedded)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="the engine's max_batch_size (64; --tiny: the largest N)")
    parser.add_argument("--tiny", action="store_true",
                        help="a random-weight model of the same architecture, 2 layers")
    parser.add_argument("--tiny-layers", type=int, default=2)
    parser.add_argument("--tiny-hidden", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each steps figure, ours and generate_batch in turn")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads, here and in the engines' threads (default: "
                        "the engine's own choice, 1 on a machine of at most 2 cores)")
    parser.add_argument("--quality-prompts", type=int, default=24,
                        help="demo prompts of the quality part (int8, int4 against float32)")
    parser.add_argument("--demo-agents", type=int, default=8)
    parser.add_argument("--demo-rounds", type=int, default=3)
    parser.add_argument("--demo-repeats", type=int, default=2,
                        help="games with and without prefix reuse, in turn")
    parser.add_argument("--chunked-repeats", type=int, default=1,
                        help="runs of each chunked-prefill variant, taken in turn")
    parser.add_argument("--chunked-variants", default="alone,join-chunked,join-one-piece")
    args = parser.parse_args()
    ns = [int(x) for x in (args.ns or ("16,64,256" if args.tiny else "1,4,16,64")).split(",")]
    if args.max_batch is None:
        args.max_batch = max(ns) if args.tiny else 64
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    parts = set((args.parts or ("steps" if args.tiny else "load,throughput,constrained"))
                .split(","))

    from agentplex.model import TransformersChatModel

    if args.tiny:
        keep_freed_memory()
        model = TransformersChatModel("tiny", model=tiny_pair(args), max_batch_size=args.max_batch)
        await model(prompt(0), max_tokens=4)
        if "steps" in parts:
            await step_costs(model, ns, args)
        return
    with tempfile.TemporaryDirectory() as cache:
        if "load" in parts:
            emit("load", "cold-gguf", 1, load_in_fresh_process(cache), "s")
            emit("load", "warm-cache", 1, load_in_fresh_process(cache), "s")
        common = {"cache_dir": cache, "max_batch_size": args.max_batch,
                  "cpu_threads": args.threads}  # the engine thread's torch threads
        model = TransformersChatModel(args.model, quantize=None, **common)
        on_cpu = model.model.device.type == "cpu"
        bf16 = TransformersChatModel(args.model, torch_dtype="bfloat16", **common) if (
            on_cpu and parts & {"throughput", "weights"}) else None
        int8 = TransformersChatModel(args.model, quantize="int8", **common) if (
            on_cpu and parts & {"throughput", "quality", "weights"}) else None
        int4 = TransformersChatModel(args.model, quantize="int4", **common) if (
            on_cpu and parts & {"quality", "weights"}) else None
    await model(prompt(0), max_tokens=4)  # first-call warm-up
    one_at_a_time(model, 1, 4)
    for quantized in (int8, int4):
        if quantized is not None:
            await quantized(prompt(0), max_tokens=4)
    if "quality" in parts and int8 is not None and int4 is not None:
        await quality(model, {"int8": int8, "int4": int4}, args.quality_prompts)
    if "throughput" in parts:
        await throughput(model, ns, args, int8)
        for n in ns if bf16 is not None else ():  # bf16 weights (AVX512-BF16 CPUs gain)
            emit("throughput", "agentplex-batched-bf16", n, await batched(bf16, n, args.tokens),
                 "tokens/s")
    if "weights" in parts and int8 is not None and int4 is not None and bf16 is not None:
        await bf16(prompt(0), max_tokens=4)
        await weights({"float32": model, "int8": int8, "int4": int4, "bf16": bf16}, ns,
                      args.tokens, args.repeats, args.llama_server)
    if "constrained" in parts:
        await constrained(model)
    if "prefix" in parts:
        await prefix_reuse(model)
    if "demo" in parts:
        await demo_rounds(model, args.demo_agents, args.demo_rounds, args.demo_repeats)
    if "steps" in parts:
        await step_costs(model, ns, args)
    if "chunked" in parts:
        chunked_prefill(model, repeats=args.chunked_repeats,
                        variants=args.chunked_variants.split(","))


RULES = ("Rule {i}: every player names a whole number from 0 to 100; the winner is the one "
         "closest to two thirds of the average of all numbers named this round. ")


def system_prompt(tokenizer: Any, tokens: int = 1000) -> str:
    """A system prompt of about ``tokens`` tokens (the rules of a game, repeated)."""
    text, i = "", 0
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < tokens:
        text += RULES.format(i=i)
        i += 1
    return text


async def one_round(model: Any, histories: list[list[dict[str, str]]]) -> tuple[float, float,
                                                                                 list[str]]:
    """Wall and CPU seconds until every agent has its first token; the answers."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = await asyncio.gather(*(model(h, max_tokens=1) for h in histories))
    return time.perf_counter() - w0, time.process_time() - c0, [r.text for r in out]


async def prefix_reuse(model: Any, agents: int = 16) -> None:
    from agentplex.model import TransformersChatModel

    pair = (model.model, model.tokenizer)
    system = system_prompt(model.tokenizer)
    first = [[{"role": "system", "content": system},
              {"role": "user", "content": f"You are player {i}. Name your number."}]
             for i in range(agents)]
    size = len(model.tokenizer(model.format_prompt(first[0]))["input_ids"])
    results: dict[str, tuple[float, float]] = {}
    for impl, cache in (("prefix-reuse", 512 * 2**20), ("no-reuse", 0)):
        m = TransformersChatModel("bench", model=pair, prefix_cache_bytes=cache)
        wall, cpu, answers = await one_round(m, first)
        results[impl] = (wall, cpu)
        emit("prefix_ttft", impl, agents, wall, "s", cpu_s=round(cpu, 2), prompt_tokens=size,
             turn=1)
        if cache:  # the next turn: every history extends the one just answered
            second = [[*h, {"role": "assistant", "content": a},
                       {"role": "user", "content": "And next round?"}]
                      for h, a in zip(first, answers, strict=True)]
            wall, cpu, _ = await one_round(m, second)
            emit("prefix_ttft", impl, agents, wall, "s", cpu_s=round(cpu, 2), turn=2)
        m.engine.close()
    (w0, c0), (w1, c1) = results["no-reuse"], results["prefix-reuse"]
    emit("prefix_ttft_speedup", "prefix-reuse", agents, c0 / c1, "x", clock="cpu",
         wall_x=round(w0 / w1, 2), target=">= 3")


async def demo_rounds(model: Any, agents: int, rounds: int, repeats: int) -> None:
    """The demo game's round times with and without prefix reuse (same weights, same seed):
    the guessing scenario's players (``CrowdPlayer``) sharing one model actor, asked as
    its rounds ask them."""
    from agentplex.cluster import ModelActor
    from agentplex.model import TransformersChatModel
    from agentplex.runtime import NameRange, Runtime
    from agentplex.sim.scenarios.guessing import (
        MODEL_PREFIX,
        PLAYER_PREFIX,
        CrowdPlayer,
        ask_players,
        outcome_text,
        question,
    )

    pair = (model.model, model.tokenizer)
    times: dict[str, list[tuple[float, float]]] = {"prefix-reuse": [], "no-reuse": []}
    hits: dict[str, int] = {}
    for _ in range(repeats):
        for impl, cache in (("prefix-reuse", 512 * 2**20), ("no-reuse", 0)):
            m = TransformersChatModel("bench", model=pair, prefix_cache_bytes=cache)
            marks = [(time.perf_counter(), time.process_time())]
            async with Runtime() as rt:
                await rt.spawn(ModelActor(m), f"{MODEL_PREFIX}0")
                names = NameRange(PLAYER_PREFIX, 0, agents)
                refs = await rt.spawn_many([CrowdPlayer(seed=0, model="bench")
                                            for _ in names], names)

                async def ask(part: Any, msg: Any, rt: Runtime = rt) -> list[Any]:
                    return await rt.call_many(part, msg, timeout=600, return_exceptions=True)

                outcome = ""
                for r in range(1, rounds + 1):
                    got = await ask_players(ask, refs, names, question(outcome, r))
                    target, winners = got.winners(names)
                    outcome = outcome_text(r, got.answered, got.total / max(1, got.answered),
                                           target, winners)
                    marks.append((time.perf_counter(), time.process_time()))
            times[impl] += [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(marks)]
            hits[impl] = m.engine.prefix.hit_tokens if m.engine.prefix else 0
            m.engine.close()
    for impl, values in times.items():
        emit("demo_round", impl, agents, statistics.median(w for w, _ in values), "s",
             cpu_s=round(statistics.median(c for _, c in values), 2), rounds=rounds,
             repeats=repeats, wall_runs=[round(w, 1) for w, _ in values],
             cpu_runs=[round(c, 1) for _, c in values], cached_prompt_tokens=hits[impl])
    (w0, c0), (w1, c1) = ([statistics.median(x[k] for x in times[impl]) for k in (0, 1)]
                          for impl in ("no-reuse", "prefix-reuse"))
    emit("demo_round_saving", "prefix-reuse", agents, 100 * (1 - c1 / c0), "% cpu",
         wall_pct=round(100 * (1 - w1 / w0), 1))


def chunked_prefill(model: Any, running: int = 8, tokens: int = 48,
                    newcomer: int = 2000, repeats: int = 1,
                    variants: list[str] | None = None) -> None:
    import threading

    from agentplex.engine import GenerationRequest
    from agentplex.model import TransformersChatModel

    tok = model.tokenizer
    pair = (model.model, tok)
    long_ids = tok(system_prompt(tok, newcomer), add_special_tokens=False)["input_ids"]
    long_ids = long_ids[:newcomer]
    short = [tok(model.format_prompt(prompt(i)), add_special_tokens=False)["input_ids"]
             for i in range(running)]

    ttft: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    passes: dict[str, list[tuple[int, int]]] = {}  # chunks, and those riding a decode pass

    def gaps(engine: Any, join: bool) -> tuple[list[float], float | None]:
        stamps: list[list[float]] = [[] for _ in range(running)]
        done = threading.Semaphore(0)
        started = threading.Event()

        def emitter(i: int | None) -> Any:
            def emit_(event: Any) -> None:
                if i is not None:
                    stamps[i].append(time.perf_counter())
                    if event.output_tokens >= 4:
                        started.set()
                if event.finish_reason is not None:
                    done.release()
            return emit_

        for i, ids in enumerate(short):
            engine.submit(GenerationRequest(prompt_ids=list(ids), max_new_tokens=tokens,
                                            emit=emitter(i)))
        window = [0.0, float("inf")]
        count = running
        if join:
            started.wait(600)
            window[0] = time.perf_counter()
            joined = threading.Event()

            def newcomer_done(event: Any) -> None:
                if event.finish_reason is not None:
                    window[1] = time.perf_counter()
                    joined.set()
                    done.release()

            engine.submit(GenerationRequest(prompt_ids=list(long_ids), max_new_tokens=1,
                                            emit=newcomer_done))
            count += 1
        for _ in range(count):
            done.acquire(timeout=1200)
        # the gaps that overlap the newcomer's prefill (all of them without a newcomer)
        overlapping = [b - a for s in stamps for a, b in itertools.pairwise(s)
                       if a < window[1] and b > window[0]]
        return overlapping, (window[1] - window[0] if join else None)

    def p95(values: list[float]) -> float:
        return statistics.quantiles(values, n=20)[-1]

    every = {"alone": (None, False), "join-chunked": (None, True),
             "join-one-piece": (10**6, True)}
    chosen = variants or list(every)
    runs: dict[str, list[float]] = {impl: [] for impl in chosen}
    for _ in range(repeats):  # the variants in turn, so that machine noise hits all alike
        for impl in chosen:
            chunk, join = every[impl]
            m = TransformersChatModel("bench", model=pair, prefix_cache_bytes=0,
                                      prefill_chunk=chunk)
            cpu_before = time.process_time()
            measured, first_token = gaps(m.engine, join)
            cpu.setdefault(impl, []).append(time.process_time() - cpu_before)
            runs[impl].append(p95(measured))
            passes.setdefault(impl, []).append(
                (m.engine.counters.chunks, m.engine.counters.mixed_steps))
            if first_token is not None:  # the newcomer's time to first token
                ttft.setdefault(impl, []).append(first_token)
            m.engine.close()
    figures = {impl: statistics.median(values) for impl, values in runs.items()}
    for impl, value in figures.items():
        emit("chunked_p95_gap", impl, running, 1000 * value, "ms",
             runs_ms=[round(1000 * v) for v in runs[impl]],
             cpu_s=[round(v, 1) for v in cpu[impl]],
             newcomer_tokens=len(long_ids) if every[impl][1] else 0)
        if impl in ttft:
            emit("chunked_newcomer_ttft", impl, running, statistics.median(ttft[impl]), "s",
                 runs_s=[round(v, 2) for v in ttft[impl]],
                 chunks=[c for c, _ in passes[impl]], mixed=[x for _, x in passes[impl]])
    if "alone" not in figures:
        return
    for impl in ("join-chunked", "join-one-piece"):
        if impl in figures:
            per_run = [j / a for j, a in zip(runs[impl], runs["alone"], strict=True)]
            emit("chunked_p95_ratio", impl, running, figures[impl] / figures["alone"], "x",
                 runs_x=[round(x, 2) for x in per_run],
                 **({"target": "<= 2"} if impl == "join-chunked" else {}))


def keep_freed_memory() -> None:
    """Have glibc's malloc reuse freed blocks of any size instead of unmapping them.

    On a CPU every tensor above 32 MiB (the logits of 256 rows) is otherwise a fresh mapping
    whose pages fault in when first written, which doubles a tiny model's forward pass; a
    GPU's caching allocator has no such cost, so the tiny mode emulates it."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-3, 2**30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 2**31)  # M_TRIM_THRESHOLD


def tiny_pair(args: argparse.Namespace) -> tuple[Any, Any]:
    """A random-weight model of the embedded model's architecture (``--tiny-layers`` layers of
    width ``--tiny-hidden``), with the embedded tokenizer and vocabulary."""
    import torch
    from transformers import AutoModelForCausalLM

    from agentplex.model.local import load_local_model

    loaded = load_local_model(args.model)
    config = copy.deepcopy(loaded.model.config)
    hidden = args.tiny_hidden
    config.update({"num_hidden_layers": args.tiny_layers, "hidden_size": hidden,
                   "intermediate_size": 2 * hidden, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": hidden // 4,
                   "initializer_range": 0.5})  # varied tokens, not one repeated
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()  # type: ignore[no-untyped-call]
    return model.to(loaded.model.device), loaded.tokenizer


async def ours(model: Any, n: int, tokens: int, **options: Any) -> dict[str, float]:
    """Tokens, wall and CPU seconds of ``n`` concurrent callers; the engine's seconds."""
    engine = model.engine
    before = (engine.counters.steps, engine.counters.forward_seconds,
              engine.counters.select_seconds)
    c0, w0 = time.process_time(), time.perf_counter()
    results = await asyncio.gather(*(model(prompt(i), max_tokens=tokens, **options)
                                     for i in range(n)))
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    steps, forward, select = (b - a for a, b in zip(before, (
        engine.counters.steps, engine.counters.forward_seconds,
        engine.counters.select_seconds), strict=True))
    return {"tokens": sum(r.usage.output_tokens for r in results), "wall": wall, "cpu": cpu,
            "steps": steps, "forward": forward, "select": select}


def queued(model: Any, n: int, tokens: int, sampled: bool) -> dict[str, float]:
    """As :func:`ours`, but the ``n`` requests go to the engine together, from this thread:
    no event loop, and no arrivals spread over the first steps (prefill passes, merges)."""
    import threading

    from agentplex.engine import GenerationRequest, Sampling

    engine, tok = model.engine, model.tokenizer
    done = threading.Semaphore(0)

    def on_event(event: Any) -> None:
        if event.finish_reason is not None:
            done.release()

    requests = [GenerationRequest(
        prompt_ids=tok(model.format_prompt(prompt(i)), add_special_tokens=False)["input_ids"],
        max_new_tokens=tokens, emit=on_event,
        sampling=Sampling(temperature=0.7, seed=i) if sampled else Sampling())
        for i in range(n)]
    before = (engine.counters.steps, engine.counters.forward_seconds,
              engine.counters.select_seconds)
    c0, w0 = time.process_time(), time.perf_counter()
    for request in requests:
        engine.submit(request)
    for _ in requests:
        done.acquire(timeout=600)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    steps, forward, select = (b - a for a, b in zip(before, (
        engine.counters.steps, engine.counters.forward_seconds,
        engine.counters.select_seconds), strict=True))
    return {"tokens": sum(len(r.generated) for r in requests), "wall": wall, "cpu": cpu,
            "steps": steps, "forward": forward, "select": select}


def theirs(model: Any, n: int, tokens: int, sampled: bool) -> dict[str, float]:
    """Tokens, wall and CPU seconds of Transformers' ``generate_batch`` on ``n`` prompts."""
    from transformers import ContinuousBatchingConfig, GenerationConfig

    tok = model.tokenizer
    inputs = [tok(model.format_prompt(prompt(i)), add_special_tokens=False)["input_ids"]
              for i in range(n)]
    config = GenerationConfig(max_new_tokens=tokens, do_sample=sampled,  # type: ignore[no-untyped-call]
                              temperature=0.7 if sampled else None,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cache = None
    if model.model.device.type == "cpu":  # else sized from free memory: the RAM, read per step
        page = 32
        blocks = n * -(-(max(map(len, inputs)) + tokens) // page) + 8
        cache = ContinuousBatchingConfig(page_size=page, num_blocks=blocks,
                                         max_batch_tokens=1024)
    c0, w0 = time.process_time(), time.perf_counter()
    out = model.model.generate_batch(inputs=inputs, generation_config=config,
                                     continuous_batching_config=cache, progress_bar=False)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"tokens": sum(len(o.generated_tokens) for o in out.values()), "wall": wall,
            "cpu": cpu}


async def step_costs(model: Any, ns: list[int], args: argparse.Namespace) -> None:
    """Ours against ``generate_batch``, greedy and sampled, and our per-step split."""
    theirs(model, 4, 4, sampled=False)  # its first-call set-up
    where = {"device": str(model.model.device), "dtype": str(model.model.dtype),
             "layers": model.model.config.num_hidden_layers,
             "max_batch_size": model.engine.max_batch_size}
    for sampled in (False, True):
        options = {"temperature": 0.7} if sampled else {}
        suffix = "-sampled" if sampled else ""
        for n in ns:
            runs: dict[str, list[dict[str, float]]] = {"ours": [], "queued": [], "theirs": []}
            for _ in range(args.repeats):  # in turn, so that machine noise hits all alike
                runs["ours"].append(await ours(model, n, args.tokens, **options))
                runs["queued"].append(queued(model, n, args.tokens, sampled))
                runs["theirs"].append(theirs(model, n, args.tokens, sampled))
            rates: dict[str, tuple[float, float]] = {}
            for who, impl in (("ours", "agentplex-batched"), ("queued", "agentplex-engine"),
                              ("theirs", "hf-generate-batch")):
                best = min(runs[who], key=lambda r: r["cpu"] / r["tokens"])
                rates[who] = (best["tokens"] / best["wall"], best["tokens"] / best["cpu"])
                emit("steps_throughput", impl + suffix, n, rates[who][0], "tokens/s",
                     per_cpu_s=round(rates[who][1], 1), tokens=best["tokens"],
                     cpu_s=round(best["cpu"], 2), wall_s=round(best["wall"], 2), **where)
                if who == "theirs":
                    continue
                per = 1000 / best["steps"]
                forward, select = best["forward"] * per, best["select"] * per
                emit("step_split", impl + suffix, n, best["wall"] * per, "ms/step",
                     forward_ms=round(forward, 3), select_ms=round(select, 3),
                     rest_ms=round(best["wall"] * per - forward - select, 3),
                     cpu_ms=round(best["cpu"] * per, 3), steps=best["steps"])
            for who in ("ours", "queued"):
                emit("steps_ratio", f"{who}/generate_batch{suffix}", n,
                     rates[who][0] / rates["theirs"][0], "x", clock="wall",
                     cpu_x=round(rates[who][1] / rates["theirs"][1], 3))


async def throughput(model: Any, ns: list[int], args: argparse.Namespace,
                     int8: Any = None) -> None:
    seq = one_at_a_time(model, args.sequential, args.tokens)
    where = {"device": str(model.model.device), "dtype": str(model.model.dtype)}
    for n in ns:
        emit("throughput", "agentplex-batched", n, await batched(model, n, args.tokens),
             "tokens/s", max_batch_size=model.engine.max_batch_size, **where)
        if int8 is not None:  # int8 weights, right after float32's row (the same load)
            emit("throughput", "agentplex-batched-int8", n, await batched(int8, n, args.tokens),
                 "tokens/s", max_batch_size=int8.engine.max_batch_size)
        emit("throughput", "hf-generate-one-at-a-time", n, seq, "tokens/s")
        emit("throughput", "hf-continuous-batching", n,
             hf_continuous_batching(model, n, args.tokens), "tokens/s")
        if args.llama_server:
            emit("throughput", "llama-cpp-server", n, llama_server(args.llama_server, n,
                                                                  args.tokens), "tokens/s")


async def weights(models: dict[str, Any], ns: list[int], tokens: int, repeats: int,
                  server: str | None = None) -> None:
    """Tokens per wall second and per CPU second of each of ``models`` (the same weights in
    different dtypes) at each N, the models taken in turn ``repeats`` times; medians. With
    ``server`` (llama.cpp's server's URL), its tokens per wall second in the same turns."""
    for n in ns:
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
        theirs: list[float] = []
        for _ in range(repeats):
            if server:
                theirs.append(llama_server(server, n, tokens))
            for name, m in models.items():
                c0, w0 = time.process_time(), time.perf_counter()
                out = await asyncio.gather(*(m(prompt(i), max_tokens=tokens) for i in range(n)))
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                made = sum(r.usage.output_tokens for r in out)
                runs[name].append((made / wall, made / cpu))
        medians = {name: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r))
                   for name, r in runs.items()}
        for name, (wall, cpu) in medians.items():
            emit("weights", name, n, wall, "tokens/s", per_cpu_s=round(cpu, 2),
                 repeats=repeats)
        base_wall, base_cpu = medians["float32"]
        for name in (name for name in models if name != "float32"):
            emit("weights_ratio", f"{name}/float32", n, medians[name][0] / base_wall, "x",
                 per_cpu_s_x=round(medians[name][1] / base_cpu, 2))
        if theirs:
            llama = statistics.median(theirs)
            emit("weights", "llama-cpp-server", n, llama, "tokens/s", repeats=repeats)
            for name in models:
                emit("weights_ratio", f"{name}/llama-cpp-server", n, medians[name][0] / llama,
                     "x")


async def quality(model: Any, quantized: dict[str, Any], prompts: int, tokens: int = 48,
                  alone_prompts: int = 8) -> None:
    """``quantized`` weights (by name) against float32: perplexity on the fixed text, and on
    the demo's prompts greedy agreement (the prompts batched together, and the first
    ``alone_prompts`` decoded one at a time), the share of batched greedy answers equal to
    the same prompt decoded alone (each weight kind against itself), the share of answers
    that are valid JSON guesses (unconstrained, greedy), and of the demo's own constrained,
    sampled calls that give a guess."""
    from tests.support.model_quality import common_prefix, demo_prompts, is_guess, perplexity

    from agentplex.sim.scenarios._game import Guess

    tok = model.tokenizer
    asks = demo_prompts(prompts)
    texts: dict[str, list[str]] = {}
    for impl, m in {"float32": model, **quantized}.items():
        value = perplexity(m.model, tok)
        emit("quality_perplexity", impl, 1, value, "ppl", text="gettysburg.txt")
        out = await asyncio.gather(*(m(p, max_tokens=tokens) for p in asks))
        texts[impl] = [r.text for r in out]
        emit("quality_valid_json", impl + "-greedy", prompts,
             100 * sum(map(is_guess, texts[impl])) / prompts, "%")
        sampled = await asyncio.gather(*(m(p, structured_model=Guess, max_tokens=tokens,
                                           temperature=0.8, seed=i)
                                         for i, p in enumerate(asks)))
        valid = sum(1 for r in sampled if r.metadata and "number" in r.metadata)
        emit("quality_valid_json", impl + "-constrained", prompts, 100 * valid / prompts, "%")
        alone = [(await m(p, max_tokens=tokens)).text for p in asks[:alone_prompts]]
        texts[impl + "-alone"] = alone
        same = sum(a == b for a, b in zip(alone, texts[impl], strict=False))
        emit("quality_batch_invariance", impl, alone_prompts, 100 * same / alone_prompts,
             "% batched = alone", batch=prompts, tokens=tokens)

    def agreement(name: str, a: list[str], b: list[str]) -> None:
        same = sum(x == y for x, y in zip(a, b, strict=True))
        ids = [[tok(t, add_special_tokens=False)["input_ids"] for t in texts] for texts in (a, b)]
        shared = sum(common_prefix(x, y) for x, y in zip(*ids, strict=True))
        emit("quality_greedy_agreement", name, len(a), 100 * same / len(a), "% identical",
             shared_prefix_pct=round(100 * shared / sum(map(len, ids[0])), 1), tokens=tokens)

    for name in quantized:
        agreement(f"{name}/float32-batched", texts["float32"], texts[name])
        agreement(f"{name}/float32-alone", texts["float32-alone"], texts[f"{name}-alone"])


async def constrained(model: Any, repeats: int = 3) -> None:
    await model(prompt(0), structured_model=Story, max_tokens=96)  # grammar set-up
    for n in (1, 16):
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(repeats):  # alternate, so that machine noise hits both alike
            for flag in (False, True):
                runs[flag].append(await per_token_ms(model, n, 96, constrained=flag))
        free, bound = (statistics.median(s for s, _ in runs[f]) for f in (False, True))
        grammar = statistics.median(c for _, c in runs[True])
        plain = statistics.median(c for _, c in runs[False])
        emit("constrained", "unconstrained", n, free, "ms/step")
        emit("constrained", "json-schema", n, bound, "ms/step")
        emit("constrained", "token-choice-unconstrained", n, plain, "ms/step")
        emit("constrained", "token-choice-json-schema", n, grammar, "ms/step")
        # The forward pass is the same with or without a grammar; on a shared CPU its time
        # swings between runs, so the grammar's cost is taken from the token-choice time.
        emit("constrained", "grammar-overhead", n, 100 * (grammar - plain) / free, "%")


if __name__ == "__main__":
    asyncio.run(main())
