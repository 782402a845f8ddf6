"""Local model benchmark: batched throughput, load times and the cost of constrained decoding.

Prints one JSON line per figure: ``{"bench", "impl", "n", "value", "unit"}``.

* ``throughput``: generated tokens per second for N concurrent callers of one
  :class:`TransformersChatModel` (dynamic batching), against the same model served one
  request at a time with ``model.generate`` (how smolagents' ``TransformersModel`` and
  AgentScope use a local model), Transformers' own continuous batching (``generate_batch``,
  an offline batch API), and, when ``--llama-server URL`` is given, llama.cpp's
  OpenAI-compatible server on the same GGUF file.
* ``load``: cold (GGUF → safetensors conversion) and warm (from the cache) load time, each in a
  fresh process, imports excluded.
* ``constrained``: milliseconds per generated token with and without a JSON schema.

Usage: ``python benchmarks/bench_local_model.py [--tokens 32] [--ns 1,4,16,64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Annotated, Any

from pydantic import BaseModel, Field

from _benchlib import emit

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
    return sum(r.usage.output_tokens for r in results) / wall


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
    from transformers import GenerationConfig

    tok = model.tokenizer
    inputs = [tok(model.format_prompt(prompt(i)), add_special_tokens=False)["input_ids"]
              for i in range(n)]
    config = GenerationConfig(max_new_tokens=tokens, do_sample=False,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    start = time.perf_counter()
    out = model.model.generate_batch(inputs=inputs, generation_config=config,
                                     progress_bar=False)
    wall = time.perf_counter() - start
    return sum(len(o.generated_tokens) for o in out.values()) / wall


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
    steps, select = engine.steps, engine.select_seconds
    start = time.perf_counter()
    await asyncio.gather(*(model(prompt(i), **kwargs) for i in range(n)))
    wall = time.perf_counter() - start
    count = engine.steps - steps
    return 1000 * wall / count, 1000 * (engine.select_seconds - select) / count


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--ns", default="1,4,16,64")
    parser.add_argument("--sequential", type=int, default=4,
                        help="requests timed for the one-at-a-time baseline")
    parser.add_argument("--llama-server", default=None, help="base URL of llama.cpp's server")
    parser.add_argument("--parts", default="load,throughput,constrained")
    args = parser.parse_args()
    ns = [int(x) for x in args.ns.split(",")]
    parts = set(args.parts.split(","))

    from agentplex.model import TransformersChatModel

    with tempfile.TemporaryDirectory() as cache:
        if "load" in parts:
            emit("load", "cold-gguf", 1, load_in_fresh_process(cache), "s")
            emit("load", "warm-cache", 1, load_in_fresh_process(cache), "s")
        model = TransformersChatModel("default", cache_dir=cache)
        bf16 = TransformersChatModel("default", cache_dir=cache, torch_dtype="bfloat16")
    await model(prompt(0), max_tokens=4)  # first-call warm-up
    await bf16(prompt(0), max_tokens=4)
    one_at_a_time(model, 1, 4)
    if "throughput" in parts:
        await throughput(model, ns, args)
        for n in ns:  # the same, with bfloat16 weights (AVX512-BF16 CPUs run these faster)
            emit("throughput", "agentplex-batched-bf16", n, await batched(bf16, n, args.tokens),
                 "tokens/s")
    if "constrained" in parts:
        await constrained(model)


async def throughput(model: Any, ns: list[int], args: argparse.Namespace) -> None:
    seq = one_at_a_time(model, args.sequential, args.tokens)
    for n in ns:
        emit("throughput", "agentplex-batched", n, await batched(model, n, args.tokens),
             "tokens/s")
        emit("throughput", "hf-generate-one-at-a-time", n, seq, "tokens/s")
        emit("throughput", "hf-continuous-batching", n,
             hf_continuous_batching(model, n, args.tokens), "tokens/s")
        if args.llama_server:
            emit("throughput", "llama-cpp-server", n, llama_server(args.llama_server, n,
                                                                  args.tokens), "tokens/s")


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
