"""Constrained decoding with xgrammar: JSON schemas, regexes, EBNF grammars and tool calls.

Measured on the 2-core CPU with the SmolLM2 tokenizer (49k tokens): xgrammar sets up in
0.15-0.25 s, compiles a JSON schema in ~6 ms and masks a token in ~0.13 ms; llguidance sets up
in ~0.35 s, makes a matcher in ~1 ms and masks a token in 0.03-0.16 ms. Both cost under 1% of a
decode step, so speed does not decide; xgrammar is used for its structural tags (free text with
schema-checked tool calls on a trigger) and its native GBNF grammars.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from .._errors import UnsupportedOptionError

__all__ = [
    "TOOL_CALL_BEGIN",
    "TOOL_CALL_END",
    "Constraint",
    "GrammarFactory",
    "constraint_from_format",
    "tool_constraint",
]

TOOL_CALL_BEGIN = "<tool_call>"
TOOL_CALL_END = "</tool_call>"


@dataclass(frozen=True)
class Constraint:
    """What the output must match: ``kind`` is json, regex, ebnf or structural_tag."""

    kind: str
    value: str


def _schema_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        return json.dumps(value.model_json_schema())
    return json.dumps(value)


def constraint_from_format(spec: Any) -> Constraint:
    """Read a ``grammar`` / ``response_format`` argument.

    Accepted: ``{"type": "json", "value": schema}``, ``{"type": "regex", "value": "..."}``,
    ``{"type": "ebnf" | "grammar", "value": "..."}``, OpenAI's ``{"type": "json_schema",
    "json_schema": {"schema": ...}}`` and ``{"type": "json_object"}``, or a pydantic class.
    """
    if isinstance(spec, type) and hasattr(spec, "model_json_schema"):
        return Constraint("json", _schema_text(spec))
    if not isinstance(spec, dict) or "type" not in spec:
        raise UnsupportedOptionError(
            f"grammar must be a dict with 'type' and 'value', got {spec!r}", provider="transformers"
        )
    kind = spec["type"]
    if kind in ("json", "json_schema"):
        value = spec.get("value")
        if value is None and isinstance(spec.get("json_schema"), dict):
            value = spec["json_schema"].get("schema", {"type": "object"})
        return Constraint("json", _schema_text(value if value is not None else {}))
    if kind == "json_object":
        return Constraint("json", json.dumps({"type": "object"}))
    if kind == "regex":
        return Constraint("regex", str(spec["value"]))
    if kind in ("ebnf", "grammar", "gbnf"):
        return Constraint("ebnf", str(spec["value"]))
    raise UnsupportedOptionError(f"unknown grammar type {kind!r}", provider="transformers")


def _tool_tag(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function", tool)
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    name = json.dumps(fn["name"])
    return {
        "type": "tag",
        "begin": f'{TOOL_CALL_BEGIN}\n{{"name": {name}, "arguments": ',
        "content": {"type": "json_schema", "json_schema": params, "max_whitespace_cnt": 1},
        "end": f"}}\n{TOOL_CALL_END}",
    }


def tool_constraint(tools: list[dict[str, Any]], tool_choice: str | None) -> Constraint | None:
    """The structural tag that makes tool calls valid: ``None`` when ``tool_choice`` is none.

    ``auto`` lets the model write text and tool calls (each call checked once it starts);
    ``required``/``any`` forces exactly one call; a tool's name forces a call to that tool.
    """
    choice = tool_choice or "auto"
    if not tools or choice == "none":
        return None
    names = [t.get("function", t)["name"] for t in tools]
    if choice in ("required", "any"):
        fmt: dict[str, Any] = {"type": "or", "elements": [_tool_tag(t) for t in tools]}
    elif choice == "auto":
        fmt = {"type": "triggered_tags", "triggers": [TOOL_CALL_BEGIN],
               "tags": [_tool_tag(t) for t in tools]}
    elif choice in names:
        fmt = _tool_tag(tools[names.index(choice)])
    else:
        raise UnsupportedOptionError(
            f"tool_choice {choice!r} names no given tool (tools: {names})", provider="transformers"
        )
    return Constraint("structural_tag", json.dumps({"type": "structural_tag", "format": fmt}))


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
        """Mask the disallowed tokens of the rows ``indices`` of ``logits`` in place."""
        self._xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), indices=indices)
