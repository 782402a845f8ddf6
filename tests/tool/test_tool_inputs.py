"""Tool schemas: preset arguments stay hidden; list-style and dict-style ``inputs`` work."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from agentplex.message import ToolUseBlock
from agentplex.tool import Tool, Toolkit

pytestmark = pytest.mark.anyio


class Translator(Tool):
    """Transformers-4.37 style: modalities in call order, names from ``forward``."""

    name = "translator"
    description = "Translate text."
    inputs: ClassVar[list[str]] = ["text", "text", "text"]

    def forward(self, text, src_lang, api_key="none"):  # type: ignore[no-untyped-def]
        """Translate.

        Args:
            text: what to translate.
            src_lang: its language.
            api_key: the service key.
        """
        return f"{text} from {src_lang} with {api_key}"


class Search(Tool):
    name = "search"
    description = "Search the web."
    inputs: ClassVar[dict[str, dict[str, Any]]] = {
        "query": {"type": "text", "description": "what to look for"},
        "api_key": {"type": "string", "description": "the key"},
    }

    def forward(self, query: str, api_key: str) -> str:
        return f"{query}:{api_key}"


async def test_list_style_inputs_take_names_from_forward() -> None:
    schema = Translator().schema()
    props = schema.parameters["properties"]
    assert list(props) == ["text", "src_lang", "api_key"]
    assert props["text"] == {"type": "string", "description": "what to translate."}
    assert schema.parameters["required"] == ["text", "src_lang"]


async def test_preset_arguments_are_hidden_from_the_model_for_every_input_style() -> None:
    toolkit = Toolkit()
    toolkit.register_tool_function(Translator(), preset_kwargs={"api_key": "s3cret"})
    toolkit.register_tool_function(Search(), preset_kwargs={"api_key": "k2"})
    toolkit.register_tool_function(
        lambda q, token: f"{q}{token}", name="raw", preset_kwargs={"token": "!"},
        json_schema={"type": "object", "properties": {"q": {"type": "string"},
                                                      "token": {"type": "string"}},
                     "required": ["q", "token"]})
    for entry in toolkit.get_json_schemas():
        params = entry["function"]["parameters"]
        assert not {"api_key", "token"} & set(params["properties"]), entry
        assert not {"api_key", "token"} & set(params.get("required", [])), entry
    out = await toolkit.execute(ToolUseBlock(id="1", name="translator",
                                             input={"text": "hola", "src_lang": "es"}))
    assert out.output == "hola from es with s3cret"
    out = await toolkit.execute(ToolUseBlock(id="2", name="search", input={"query": "q"}))
    assert out.output == "q:k2"
    out = await toolkit.execute(ToolUseBlock(id="3", name="raw", input={"q": "a"}))
    assert out.output == "a!"
    sneaky = await toolkit.execute(ToolUseBlock(id="4", name="search",
                                                input={"query": "q", "api_key": "mine"}))
    assert sneaky.is_error


def test_bad_inputs_declarations_are_clear_errors() -> None:
    class Short(Translator):
        inputs: ClassVar[list[str]] = ["text"]

    with pytest.raises(TypeError, match="lists 1 modalities but forward"):
        Short().schema()

    class Odd(Translator):
        inputs: ClassVar[list[str]] = ["text", "smell", "text"]

    with pytest.raises(TypeError, match="unknown modalities"):
        Odd().schema()
