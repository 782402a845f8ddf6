"""Constrained decoding with xgrammar: compiled grammars and their token masks.

A :class:`Constraint` says what an output must match (a JSON schema, a regex, an EBNF
grammar or a structural tag); a :class:`GrammarFactory` compiles it for one tokenizer into a
matcher that a :class:`GenerationRequest` carries, and masks the tokens each matcher forbids
in a batch's logits. Reading constraints from a call's arguments (``response_format``,
tools) is the chat model's job.

Measured on the 2-core CPU with the SmolLM2 tokenizer (49k tokens): xgrammar sets up in
0.15-0.25 s, compiles a JSON schema in ~6 ms and masks a token in ~0.13 ms; llguidance sets up
in ~0.35 s, makes a matcher in ~1 ms and masks a token in 0.03-0.16 ms. Both cost under 1% of a
decode step, so speed does not decide; xgrammar is used for its structural tags (free text with
schema-checked tool calls on a trigger) and its native GBNF grammars. Applying the masks to a
batch's logits costs more than computing them, and is done here on a CPU
(:meth:`GrammarFactory.apply_bitmask`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["Constraint", "GrammarFactory"]


@dataclass(frozen=True)
class Constraint:
    """What the output must match: ``kind`` is json, regex, ebnf or structural_tag."""

    kind: str
    value: str


class GrammarFactory:
    """Compiles constraints for one tokenizer and hands out fresh matchers (thread-safe)."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids
        )
        self.vocab_size = info.vocab_size
        self.closers = sorted({*stop_token_ids, *(
            i for i, piece in enumerate(info.decoded_vocab)
            if piece.strip() and set(piece.strip()) <= set(b'"]}')
        )})
        """Tokens that end the output or close strings, arrays and objects (preferred near
        the budget)."""
        self._compiler = xgr.GrammarCompiler(info, cache_enabled=True)
        self._lock = threading.Lock()

    def matcher(self, constraint: Constraint) -> Any:
        """A new ``xgrammar.GrammarMatcher`` for ``constraint``."""
        with self._lock:
            if constraint.kind == "json":
                compiled = self._compiler.compile_json_schema(
                    constraint.value, any_whitespace=False, strict_mode=True
                )
            elif constraint.kind == "regex":
                compiled = self._compiler.compile_regex(constraint.value)
            elif constraint.kind == "ebnf":
                compiled = self._compiler.compile_grammar(constraint.value)
            else:
                compiled = self._compiler.compile_structural_tag(constraint.value)
        return self._xgr.GrammarMatcher(compiled)

    def allocate_bitmask(self, rows: int) -> Any:
        """A token bitmask for ``rows`` sequences."""
        return self._xgr.allocate_token_bitmask(rows, self.vocab_size)

    def prefer_closing(self, logits: Any, rows: list[int]) -> None:
        """Favour closing tokens in ``rows``, so outputs near their budget end complete."""
        if rows and self.closers:
            import torch

            index = torch.tensor(rows, device=logits.device)[:, None]
            closers = torch.tensor(self.closers, device=logits.device)[None, :]
            logits[index, closers] += 1e4

    def apply_bitmask(self, logits: Any, bitmask: Any, indices: list[int]) -> None:
        """Mask the disallowed tokens of the rows ``indices`` of ``logits`` in place (minus
        infinity, as xgrammar's kernels do). Float32 logits on a CPU: the bits unpacked by
        NumPy and one vectorized fill, 3x faster than xgrammar's CPU kernel, which tests
        token by token (128 rows of the embedded model's 49k tokens: 12 ms against 37, one
        thread); elsewhere xgrammar's kernels."""
        import torch

        if logits.device.type != "cpu" or logits.dtype != torch.float32 or logits.dim() != 2:
            self._xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device),
                                                  indices=indices)
            return
        import numpy as np

        width = min(logits.shape[1], bitmask.shape[1] * 32)
        words = bitmask[indices].numpy().view(np.uint8)
        allowed = np.unpackbits(words, axis=1, bitorder="little")[:, :width]
        forbidden = torch.from_numpy(allowed) == 0
        if indices == list(range(logits.shape[0])):
            logits[:, :width].masked_fill_(forbidden, float("-inf"))
        else:
            rows = torch.tensor(indices)
            logits[rows, :width] = logits[rows, :width].masked_fill(forbidden, float("-inf"))
