"""The provider-independent formatting helpers and the structured-output schema helpers."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from agentplex.message import AudioBlock, Base64Source, ImageBlock, Msg, TextBlock, URLSource
from agentplex.model import UnsupportedOptionError
from agentplex.model._formatting import (
    convert_roles,
    function_specs,
    label_speakers,
    media_bytes,
    media_data_url,
    normalize_tool_choice,
)
from agentplex.model._hosted import retry_after_seconds
from agentplex.model._structured import closed_schema, forced_tool
from agentplex.model.openai import format_openai_messages
from tests.support.model_inputs import CLOCK_TOOL, PNG_B64, WEATHER_TOOL, City


def test_two_party_history_is_not_labelled() -> None:
    msgs = [Msg("sys", "rules", "system"), Msg("ann", "hi", "user"), Msg("bot", "yo", "assistant")]
    assert label_speakers(msgs) == msgs


def test_several_speakers_are_labelled_once() -> None:
    msgs = [Msg("sys", "rules", "system"), Msg("ann", "hi", "user"), Msg("ben", "hey", "user")]
    out = label_speakers(msgs)
    assert [m.get_text_content() for m in out] == ["rules", "ann: hi", "ben: hey"]  # type: ignore[union-attr]
    assert msgs[1].content == "hi"  # the input is not modified


def test_role_conversions() -> None:
    out = convert_roles([Msg("s", "x", "system")], {"system": "user"}, "p", "m")
    assert out[0].role == "user"  # type: ignore[union-attr]
    with pytest.raises(UnsupportedOptionError, match=r"\[p:m\].*'developer'"):
        convert_roles([Msg("s", "x", "system")], {"system": "developer"}, "p", "m")


def test_tool_choice_normalisation() -> None:
    tools = [WEATHER_TOOL, CLOCK_TOOL]
    assert normalize_tool_choice(None, tools, "p", "m") is None
    assert normalize_tool_choice("any", tools, "p", "m") == "required"
    assert normalize_tool_choice("get_time", tools, "p", "m") == ("tool", "get_time")
    assert normalize_tool_choice("none", None, "p", "m") == "none"
    with pytest.raises(UnsupportedOptionError, match="needs tools"):
        normalize_tool_choice("get_time", None, "p", "m")


def test_function_specs_reject_nameless_tools() -> None:
    assert function_specs([{"name": "bare", "parameters": {}}])[0].name == "bare"
    with pytest.raises(ValueError, match="function name"):
        function_specs([{"type": "function", "function": {}}])


def test_media_sources(tmp_path: Path) -> None:
    raw = base64.b64decode(PNG_B64)
    path = tmp_path / "pixel.png"
    path.write_bytes(raw)
    inline = ImageBlock(source=Base64Source(media_type="image/png", data=PNG_B64))
    assert media_bytes(inline) == ("image/png", raw)
    assert media_bytes(ImageBlock(source=URLSource(url=path.as_uri()))) == ("image/png", raw)
    data_url = f"data:image/png;base64,{PNG_B64}"
    assert media_bytes(ImageBlock(source=URLSource(url=data_url))) == ("image/png", raw)
    assert media_data_url(inline) == data_url
    remote = ImageBlock(source=URLSource(url="https://example.com/a.png"))
    assert media_data_url(remote) == "https://example.com/a.png"
    with pytest.raises(ValueError, match="downloaded"):
        media_bytes(remote)
    with pytest.raises(ValueError, match="base64"):
        media_bytes(ImageBlock(source=Base64Source(media_type="image/png", data="%%%")))


def test_openai_audio_and_tool_result_media() -> None:
    from agentplex.message import ToolResultBlock

    audio = AudioBlock(source=Base64Source(media_type="audio/wav", data="UklGRg=="))
    image = ImageBlock(source=Base64Source(media_type="image/png", data=PNG_B64))
    out = format_openai_messages([
        Msg("u", [TextBlock(text="hear"), audio], "user"),
        Msg("t", [ToolResultBlock(id="c", name="snap", output=[TextBlock(text="done"), image])],
            "user"),
    ])
    assert out[0]["content"][1] == {"type": "input_audio",
                                    "input_audio": {"data": "UklGRg==", "format": "wav"}}
    assert out[1] == {"role": "tool", "tool_call_id": "c", "content": "done"}
    assert out[2]["role"] == "user" and out[2]["content"][1]["type"] == "image_url"


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({}) is None


def test_schema_helpers() -> None:
    schema = closed_schema(City)
    assert schema["additionalProperties"] is False
    tool = forced_tool(City)
    assert tool["function"]["name"] == "City"
    assert tool["function"]["description"] == "A city and its population."
