"""Choosing the sampled tokens of a batch: all rows at once against one row at a time.

    .venv/bin/python benchmarks/bench_sampling.py [--rows 256] [--vocab 49152] [--steps 20]

The local engine's sampling step for ``--rows`` rows with a temperature and a seed each (as
the demo's players sample), on random logits of ``--vocab`` tokens (SmolLM2's vocabulary):
``batched`` is the engine's (one softmax and one inverse-CDF search for the batch, a
uniform number per row from the row's seed and position); ``per-row`` is what it did before (each
row's own softmax and ``torch.multinomial`` with the row's generator). Figures: milliseconds
of CPU time per step, the two alternating step by step, and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import emit

_generators: dict[int, Any] = {}


def per_row(reqs: list[Any], logits: Any) -> list[int]:
    """The baseline: a softmax and a multinomial draw for each row (a generator each)."""
    import torch

    out = []
    for row, r in enumerate(reqs):
        generator = _generators.setdefault(
            id(r), torch.Generator().manual_seed(r.sampling.seed))
        probs = (logits[row] / r.sampling.temperature).softmax(dim=-1)
        out.append(int(torch.multinomial(probs, 1, generator=generator).item()))
    return out


def main() -> None:
    import torch

    from agentplex.engine import GenerationRequest, Sampling
    from agentplex.engine._sampling import sample, seed_request

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    def requests() -> list[GenerationRequest]:
        reqs = [GenerationRequest(prompt_ids=[1], max_new_tokens=1, emit=lambda event: None,
                                  sampling=Sampling(temperature=0.8, seed=i))
                for i in range(args.rows)]
        for r in reqs:
            seed_request(r)
        return reqs

    impls = {"batched": (sample, requests()), "per-row": (per_row, requests())}
    spent = dict.fromkeys(impls, 0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(args.steps):
        logits = torch.randn(args.rows, args.vocab, generator=g) * 4
        for name, (choose, reqs) in impls.items():
            started = time.process_time()
            choose(reqs, logits)
            spent[name] += time.process_time() - started
    for name, seconds in spent.items():
        emit("sampling", name, args.rows * args.steps, 1000 * seconds / args.steps,
             "ms/step (CPU)", rows=args.rows, vocab=args.vocab)
    emit("sampling_ratio", "per-row/batched", args.rows * args.steps,
         spent["per-row"] / spent["batched"], "x")


if __name__ == "__main__":
    with __import__("torch").inference_mode():
        main()
