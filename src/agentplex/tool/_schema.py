"""JSON schemas for tool functions, from their signature and docstring.

Parameter descriptions come from the docstring in Google, NumPy or reST style; types,
defaults and required-ness from the signature. The same signature gives a pydantic model
that validates a call's arguments before the function runs.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import docstring_parser
from pydantic import BaseModel, ConfigDict, Field, create_model

__all__ = ["FunctionSchema", "function_schema", "parse_docstring", "tidy_schema"]


@dataclass
class FunctionSchema:
    """A tool function's name, description, argument model and JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]
    """The JSON schema of the arguments (an ``object`` schema)."""
    model: type[BaseModel] | None = None
    """Validates arguments; ``None`` for schemas given as raw JSON."""
    arg_names: dict[str, str] | None = None
    """Model field name → parameter name (fields are renamed to avoid pydantic clashes)."""

    @property
    def json_schema(self) -> dict[str, Any]:
        """The ``{"type": "function", "function": {...}}`` form models take."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a docstring (Google, NumPy or reST) into its description and parameter docs."""
    if not doc or not doc.strip():
        return "", {}
    parsed = docstring_parser.parse(inspect.cleandoc(doc))
    parts = [p for p in (parsed.short_description, parsed.long_description) if p]
    params = {p.arg_name: " ".join((p.description or "").split()) for p in parsed.params}
    return "\n\n".join(parts).strip(), params


def function_schema(
    func: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    preset: Iterable[str] = (),
) -> FunctionSchema:
    """Build the schema of ``func``, leaving out the parameters named in ``preset``."""
    hidden = set(preset)
    doc_description, param_docs = parse_docstring(inspect.getdoc(func))
    signature = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = {}
    fields: dict[str, Any] = {}
    arg_names: dict[str, str] = {}
    extra: Literal["allow", "forbid"] = "forbid"
    for index, param in enumerate(signature.parameters.values()):
        if param.kind is param.VAR_KEYWORD:
            extra = "allow"
            continue
        if param.kind is param.VAR_POSITIONAL or param.name in hidden:
            continue
        annotation = hints.get(param.name, param.annotation)
        if annotation is inspect.Parameter.empty:
            annotation = Any
        default = ... if param.default is inspect.Parameter.empty else param.default
        field_name = f"arg{index}"
        arg_names[field_name] = param.name
        info = Field(default, alias=param.name)
        if param_docs.get(param.name):  # keep an Annotated Field's own description otherwise
            info = Field(default, alias=param.name, description=param_docs[param.name])
        fields[field_name] = (annotation, info)
    tool_name: str = name or getattr(func, "__name__", None) or type(func).__name__
    model = create_model(
        f"{tool_name}_arguments",
        __config__=ConfigDict(extra=extra, arbitrary_types_allowed=True, populate_by_name=False),
        **fields,
    )
    parameters = tidy_schema(model.model_json_schema(by_alias=True))
    if extra == "allow":
        parameters.pop("additionalProperties", None)
    return FunctionSchema(
        name=tool_name,
        description=description if description is not None else doc_description,
        parameters=parameters,
        model=model,
        arg_names=arg_names,
    )


def tidy_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$ref``s (unless recursive) and drop pydantic's generated ``title``s."""
    defs = schema.get("$defs", {})
    recursive = False

    def walk(node: Any, seen: tuple[str, ...], in_properties: bool = False) -> Any:
        nonlocal recursive
        if isinstance(node, list):
            return [walk(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        if in_properties:  # keys are property names, not keywords
            return {k: walk(v, seen) for k, v in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            key = ref.removeprefix("#/$defs/")
            if key in seen or key not in defs:
                recursive = True
                return node
            merged = {**defs[key], **{k: v for k, v in node.items() if k != "$ref"}}
            return walk(merged, (*seen, key))
        out: dict[str, Any] = {}
        for k, v in node.items():
            if (k == "title" and isinstance(v, str)) or k == "$defs":
                continue
            out[k] = walk(v, seen, in_properties=k in ("properties", "patternProperties"))
        return out

    tidied: dict[str, Any] = walk(schema, ())
    if recursive:
        tidied["$defs"] = {k: walk(v, ()) for k, v in defs.items()}
    tidied.setdefault("properties", {})
    tidied.setdefault("type", "object")
    return tidied
