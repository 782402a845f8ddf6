"""How well a local model predicts text: perplexity on a fixed public-domain text, and the
demo game's prompts (used by the quantization tests and ``benchmarks/bench_local_model.py``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

TEXT = Path(__file__).parent / "texts" / "gettysburg.txt"
"""The fixed text: the Gettysburg Address and the opening of the Declaration of Independence
(both in the public domain)."""


def perplexity(model: Any, tokenizer: Any, text: str | None = None,
               max_tokens: int = 1024) -> float:
    """``model``'s perplexity on ``text`` (default :data:`TEXT`), in one forward pass."""
    import torch

    text = TEXT.read_text() if text is None else text
    ids = tokenizer(text, return_tensors="pt")["input_ids"][:, :max_tokens]
    with torch.inference_mode():
        logits = model(ids.to(model.device)).logits.float()
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:].to(logits.device))
    return math.exp(float(loss))


def decode_perplexity(model: Any, tokenizer: Any, tokens: int = 160) -> float:
    """``model``'s perplexity on the first ``tokens`` of :data:`TEXT`, one token a forward
    pass over the cache of those before it — the path of one agent decoding (a quantized
    layer's kernel for a row alone, not the many-row matmul of :func:`perplexity`)."""
    import torch
    from transformers import DynamicCache

    ids = tokenizer(TEXT.read_text(), return_tensors="pt")["input_ids"][:, :tokens]
    ids = ids.to(model.device)
    cache = DynamicCache()
    loss = 0.0
    with torch.inference_mode():
        for i in range(ids.shape[1] - 1):
            logits = model(ids[:, i:i + 1], past_key_values=cache, use_cache=True).logits
            loss -= float(torch.log_softmax(logits[0, -1].float(), -1)[ids[0, i + 1]])
    return math.exp(loss / (ids.shape[1] - 1))


def demo_prompts(count: int) -> list[list[dict[str, str]]]:
    """``count`` prompts as the demo game's players send them (``sim.scenarios._game``):
    the rules, what was heard in earlier rounds (for every other prompt), the persona, the
    request for a guess as JSON, and who the player is, last."""
    from agentplex.sim.scenarios._game import PERSONAS, RULES

    prompts = []
    for i in range(count):
        heard = "\n".join(f"Player{j + 1}: I guess {(17 * j + 5 * i) % 90}." for j in range(6))
        ask = (f"{PERSONAS[i % len(PERSONAS)]} Reply with your guess as JSON. "
               f"You are Player{i + 1}.")
        user = f"{heard}\n\n{ask}" if i % 2 else ask
        prompts.append([{"role": "system", "content": RULES}, {"role": "user", "content": user}])
    return prompts


def is_guess(text: str) -> bool:
    """Whether ``text`` is a JSON object whose ``number`` is an integer from 0 to 100 (what
    the demo's ``Guess`` accepts), allowing a Markdown code fence around it."""
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```")
    try:
        value = json.loads(body)
    except ValueError:
        return False
    number = value.get("number") if isinstance(value, dict) else None
    return isinstance(number, int) and not isinstance(number, bool) and 0 <= number <= 100


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
