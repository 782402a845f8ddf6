"""Structured output: one validated pydantic instance from any provider.

Providers with a native JSON-schema mode use it; the others get a forced tool whose
parameters are the schema (or, in ``json_object`` mode, a plain JSON mode with the schema
in the prompt). Invalid output gets one repair round (the model sees its output
and the validation error); invalid again raises :class:`StructuredOutputError` with the
raw text.
"""

from __future__ import annotations

import copy
import json
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, RootModel, ValidationError, create_model, model_validator

from ..message import Msg, TextBlock, ToolUseBlock
from ._errors import StructuredOutputError
from ._response import ChatResponse

__all__ = [
    "StructuredMode",
    "StructuredRequest",
    "closed_schema",
    "forced_tool",
    "run_structured",
    "schema_name",
    "structured_schema",
]

StructuredMode: TypeAlias = Literal["native", "tool", "json_object"]

JSON_PROMPT = "Answer with only a JSON object that matches this JSON schema:\n{schema}"

REPAIR_PROMPT = (
    "Your previous answer was not valid for the required schema:\n{error}\n"
    "Answer again with only a JSON object that matches this JSON schema:\n{schema}"
)


def schema_name(model: type[BaseModel]) -> str:
    """A tool / schema name for ``model`` that every provider accepts."""
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in model.__name__)
    return name[:64] or "structured_output"


def forced_tool(model: type[BaseModel]) -> dict[str, Any]:
    """A function tool whose parameters are ``model``'s JSON schema."""
    return {
        "type": "function",
        "function": {
            "name": schema_name(model),
            "description": model.__doc__ or f"Return the answer as a {model.__name__} object.",
            "parameters": model.model_json_schema(),
        },
    }


@dataclass(frozen=True)
class StructuredRequest:
    """What one structured attempt asks the provider for.

    ``native``: the provider's schema mode (``schema`` sent as the response format);
    ``tool``: ``tools`` holds the forced tool and ``tool_choice`` names it;
    ``json_object``: the provider's plain JSON mode, the schema being in the prompt.
    """

    mode: StructuredMode
    schema: type[BaseModel]
    tools: list[dict[str, Any]] | None
    tool_choice: str | None


Attempt = Callable[[list[Any], StructuredRequest], Awaitable[ChatResponse]]


def _raw_output(response: ChatResponse, request: StructuredRequest) -> str:
    if request.mode == "tool":
        for block in response.content:
            if isinstance(block, ToolUseBlock) and block.name == schema_name(request.schema):
                return block.raw_input or json.dumps(block.input, ensure_ascii=False)
    return "".join(b.text for b in response.content if isinstance(b, TextBlock))


def _validate(structured_model: type[BaseModel], raw: str) -> BaseModel:
    """``raw`` (without a Markdown fence) as ``structured_model``. Real servers (llama.cpp,
    small models on OpenAI-compatible wires) put raw control characters such as newlines
    inside JSON strings: strict JSON refuses them, so such text is read leniently."""
    text = _strip_fence(raw)
    try:
        return structured_model.model_validate_json(text)
    except ValidationError as exc:
        if not any(e.get("type") == "json_invalid" for e in exc.errors()):
            raise
        try:
            data = json.loads(text, strict=False)
        except ValueError:
            raise exc from None
        return structured_model.model_validate(data)


def _strip_fence(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped[3:-3]
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else stripped
    return stripped.strip()


async def run_structured(
    attempt: Attempt,
    messages: list[Any],
    structured_model: type[BaseModel],
    *,
    mode: StructuredMode,
    provider: str,
    model: str,
    how: str = "",
) -> ChatResponse:
    """Ask for ``structured_model`` output, repair once, and return it in ``metadata``.

    ``metadata`` holds the validated instance's fields (``instance.model_dump()``, as
    :class:`ScriptedChatModel` does); ``structured_model(**metadata)`` rebuilds it.
    ``attempt(history, request)`` performs one non-streamed provider call. Output that is
    still invalid after the repair raises :class:`StructuredOutputError` naming ``mode``
    and ``how`` (what the provider's wire did with the schema in that mode).
    """
    tool = mode == "tool"
    request = StructuredRequest(
        mode=mode,
        schema=structured_model,
        tools=[forced_tool(structured_model)] if tool else None,
        tool_choice=schema_name(structured_model) if tool else None,
    )
    history = list(messages)
    if mode == "json_object":
        schema = json.dumps(structured_model.model_json_schema(), ensure_ascii=False)
        history.append(Msg("user", JSON_PROMPT.format(schema=schema), "user"))
    usage = None
    for round_ in range(2):
        response = await attempt(history, request)
        if usage is None or response.usage is None:
            usage = response.usage or usage
        else:
            usage = usage + response.usage
        raw = _raw_output(response, request)
        try:
            instance = _validate(structured_model, raw)
        except ValidationError as exc:
            if round_ == 1:
                shown = f"structured_output={mode!r}" + (f": {how}" if how else "")
                raise StructuredOutputError(
                    f"output did not match {structured_model.__name__} after one repair "
                    f"round ({shown}): {exc.errors(include_url=False)[:3]}",
                    raw=raw, provider=provider, model=model, mode=mode,
                ) from exc
            schema = json.dumps(structured_model.model_json_schema(), ensure_ascii=False)
            history += [
                Msg("assistant", raw or "(empty)", "assistant"),
                Msg("user", REPAIR_PROMPT.format(error=exc, schema=schema), "user"),
            ]
            continue
        return response.model_copy(
            update={"metadata": instance.model_dump(), "usage": usage}
        )
    raise AssertionError("unreachable")


def closed_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with ``additionalProperties: false`` on every object.

    Strict schema modes (Anthropic's output format, OpenAI's strict mode) require it.
    """

    def close(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: close(v) for k, v in node.items()}
            if node.get("type") == "object":
                node.setdefault("additionalProperties", False)
            return node
        if isinstance(node, list):
            return [close(v) for v in node]
        return node

    result: dict[str, Any] = close(model.model_json_schema())
    return result


def structured_schema(schema: Any) -> tuple[type[BaseModel], bool]:
    """A pydantic model for ``schema`` and whether answers are its instances (else dicts).

    ``schema`` is a pydantic model, a ``TypedDict``, or a JSON schema (an OpenAI function
    dict's ``parameters`` are used); a JSON schema is enforced with ``jsonschema``.
    """
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema, True
    if typing.is_typeddict(schema):
        hints = typing.get_type_hints(schema)
        required = getattr(schema, "__required_keys__", frozenset(hints))
        fields: dict[str, Any] = {k: (t, ...) if k in required else (t | None, None)
                                  for k, t in hints.items()}
        model = create_model(schema.__name__, __doc__=schema.__doc__, **fields)
        return model, False
    if isinstance(schema, dict):
        return _json_schema_model(schema), False
    raise TypeError(f"a structured-output schema is a pydantic model, a TypedDict or a "
                    f"JSON schema dict, not {schema!r}")


def _json_schema_model(schema: dict[str, Any]) -> type[BaseModel]:
    import jsonschema

    function = schema.get("function", schema)
    if "parameters" in function and "name" in function:
        title, description = function["name"], function.get("description")
        schema = function["parameters"]
    else:
        title, description = schema.get("title", "Output"), schema.get("description")
    validator = jsonschema.Draft202012Validator(schema)
    fixed = copy.deepcopy(schema)

    class JsonSchemaOutput(RootModel[dict[str, Any]]):
        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return copy.deepcopy(fixed)

        @model_validator(mode="after")
        def _conforms(self) -> JsonSchemaOutput:
            errors = sorted(validator.iter_errors(self.root), key=lambda e: list(e.path))
            if errors:
                raise ValueError("; ".join(f"{'/'.join(map(str, e.path)) or '(root)'}: "
                                           f"{e.message}" for e in errors[:3]))
            return self

    JsonSchemaOutput.__name__ = JsonSchemaOutput.__qualname__ = str(title)
    JsonSchemaOutput.__doc__ = description
    return JsonSchemaOutput
