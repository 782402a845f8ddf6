"""Constraints from a call's arguments: ``grammar`` / ``response_format`` and tool calls.

The engine enforces a :class:`~agentplex.engine.Constraint` while decoding
(:class:`~agentplex.engine.GrammarFactory`); this module reads one from what a caller gave
(a JSON schema, a regex, an EBNF grammar, a pydantic class, OpenAI's ``response_format``)
and builds the structural tag that keeps tool calls (``<tool_call>`` sections) valid.
"""

from __future__ import annotations

import json
from typing import Any

from ...engine import Constraint
from .._errors import UnsupportedOptionError

__all__ = [
    "TOOL_CALL_BEGIN",
    "TOOL_CALL_END",
    "constraint_from_format",
    "tool_constraint",
]

TOOL_CALL_BEGIN = "<tool_call>"
TOOL_CALL_END = "</tool_call>"


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
