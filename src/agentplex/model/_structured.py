"""Structured output: one validated pydantic instance from any provider.

Providers with a native JSON-schema mode use it; the others get a forced tool whose
parameters are the schema. Invalid output gets one repair round (the model sees its output
and the validation error); invalid again raises :class:`StructuredOutputError` with the
raw text.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ..message import Msg, TextBlock, ToolUseBlock
from ._errors import StructuredOutputError
from ._response import ChatResponse

__all__ = ["StructuredRequest", "closed_schema", "forced_tool", "run_structured", "schema_name"]

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

    ``native`` means the provider's schema mode (``schema`` to be sent as the response
    format); otherwise ``tools`` holds the forced tool and ``tool_choice`` names it.
    """

    native: bool
    schema: type[BaseModel]
    tools: list[dict[str, Any]] | None
    tool_choice: str | None


Attempt = Callable[[list[Any], StructuredRequest], Awaitable[ChatResponse]]


def _raw_output(response: ChatResponse, request: StructuredRequest) -> str:
    if not request.native:
        for block in response.content:
            if isinstance(block, ToolUseBlock) and block.name == schema_name(request.schema):
                return block.raw_input or json.dumps(block.input, ensure_ascii=False)
    return "".join(b.text for b in response.content if isinstance(b, TextBlock))


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
    native: bool,
    provider: str,
    model: str,
) -> ChatResponse:
    """Ask for ``structured_model`` output, repair once, and return it in ``metadata``.

    ``metadata`` holds the validated instance's fields (``instance.model_dump()``, as
    :class:`ScriptedChatModel` does); ``structured_model(**metadata)`` rebuilds it.
    ``attempt(history, request)`` performs one non-streamed provider call.
    """
    request = StructuredRequest(
        native=native,
        schema=structured_model,
        tools=None if native else [forced_tool(structured_model)],
        tool_choice=None if native else schema_name(structured_model),
    )
    history = list(messages)
    usage = None
    for round_ in range(2):
        response = await attempt(history, request)
        if usage is None or response.usage is None:
            usage = response.usage or usage
        else:
            usage = usage + response.usage
        raw = _raw_output(response, request)
        try:
            instance = structured_model.model_validate_json(_strip_fence(raw))
        except ValidationError as exc:
            if round_ == 1:
                raise StructuredOutputError(
                    f"output did not match {structured_model.__name__} after one repair "
                    f"round: {exc.errors(include_url=False)[:3]}",
                    raw=raw, provider=provider, model=model,
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
