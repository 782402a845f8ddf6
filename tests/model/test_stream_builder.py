import pytest

from agentplex.model.lowlevel import ResponseBuilder, parse_tool_arguments


def test_builder_accumulates_text_thinking_and_tool_calls() -> None:
    b = ResponseBuilder(id="r1")
    b.add_thinking("hmm")
    b.add_thinking("", signature="sig")
    b.add_text("Hel")
    first = b.chunk()
    b.add_text("lo")
    b.add_tool_call(0, id="t1", name="f", arguments='{"a":')
    b.add_tool_call(0, arguments=" 1}")
    last = b.chunk(is_last=True)
    assert first.text == "Hel" and [d.type for d in first.delta] == ["thinking", "thinking",
                                                                       "text"]
    assert last.id == "r1" and last.text == "Hello" and last.thinking == "hmm"
    assert last.content[0].signature == "sig"  # type: ignore[union-attr]
    assert last.tool_calls[0].input == {"a": 1}
    assert [d.type for d in last.delta] == ["text", "tool_use", "tool_use"]


def test_incomplete_tool_arguments_fail_on_the_last_chunk() -> None:
    b = ResponseBuilder()
    b.add_tool_call("x", id="t", name="f", arguments='{"a": ')
    assert b.chunk().tool_calls[0].input == {}
    with pytest.raises(ValueError):
        b.chunk(is_last=True)


def test_parse_tool_arguments() -> None:
    assert parse_tool_arguments("") == {}
    assert parse_tool_arguments(None) == {}
    assert parse_tool_arguments('{"k": [1]}') == {"k": [1]}
    with pytest.raises(ValueError, match="JSON object"):
        parse_tool_arguments("[1, 2]")
