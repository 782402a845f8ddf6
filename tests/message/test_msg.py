import pytest
from pydantic import ValidationError

from agentplex.message import (
    Base64Source,
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)


def test_positional_construction_like_agentscope() -> None:
    msg = Msg("alice", "hello", "user")
    assert (msg.name, msg.content, msg.role) == ("alice", "hello", "user")
    assert msg.id and msg.timestamp


def test_dict_blocks_are_validated_into_models() -> None:
    msg = Msg("bob", [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "1",
                                                         "name": "f", "input": {"x": 1}}],
              "assistant")
    assert isinstance(msg.content[0], TextBlock)
    assert isinstance(msg.content[1], ToolUseBlock)
    assert msg.content[1]["input"] == {"x": 1}  # dict-style access still works
    assert msg.content[1].get("missing", 5) == 5


def test_text_helpers() -> None:
    msg = Msg("a", [TextBlock(text="one"), ThinkingBlock(thinking="hmm"), TextBlock(text="two")],
              "assistant")
    assert msg.get_text_content() == "one\ntwo"
    assert [b.thinking for b in msg.get_content_blocks("thinking")] == ["hmm"]
    assert msg.has_content_blocks("text")
    assert not msg.has_content_blocks("tool_use")
    assert Msg("a", "plain", "user").get_content_blocks("text")[0].text == "plain"
    assert Msg("a", [], "user").get_text_content() is None
    with pytest.raises(ValueError, match="unknown block type"):
        msg.get_content_blocks("nope")  # type: ignore[call-overload]


def test_invalid_input_is_rejected() -> None:
    with pytest.raises(ValidationError):
        Msg("a", "x", "robot")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Msg("a", [{"type": "hologram"}], "user")
    with pytest.raises(ValidationError):
        Msg("a", [{"type": "text"}], "user")


def test_json_round_trip() -> None:
    msg = Msg("a", [ImageBlock(source=Base64Source(media_type="image/png", data="AAEC")),
                    ToolResultBlock(id="1", name="f", output=[TextBlock(text="ok")],
                                    is_error=True)], "user", metadata={"k": [1, 2]})
    assert Msg.from_dict(msg.to_dict()) == msg
