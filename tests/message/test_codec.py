import base64
import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentplex.message import (
    AudioBlock,
    Base64Source,
    DecodeError,
    EncodeError,
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
    VideoBlock,
    decode,
    encode,
)

text = st.text(max_size=40)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                        st.floats(allow_nan=False), text)
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)), max_leaves=10)

b64_source = st.builds(
    Base64Source,
    media_type=st.sampled_from(["image/png", "audio/wav", "video/mp4"]),
    data=st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
)
source = st.one_of(b64_source, st.builds(URLSource, url=text))
media = st.one_of(st.builds(ImageBlock, source=source), st.builds(AudioBlock, source=source),
                  st.builds(VideoBlock, source=source))
tool_output = st.one_of(text, st.lists(st.one_of(st.builds(TextBlock, text=text), media),
                                        max_size=3))
block = st.one_of(
    st.builds(TextBlock, text=text),
    st.builds(ThinkingBlock, thinking=text, signature=st.one_of(st.none(), text)),
    st.builds(ToolUseBlock, id=text, name=text,
              input=st.dictionaries(text, json_value, max_size=3),
              raw_input=st.one_of(st.none(), text)),
    st.builds(ToolResultBlock, id=text, name=text, output=tool_output, is_error=st.booleans()),
    media,
)
messages = st.builds(
    Msg,
    name=text,
    role=st.sampled_from(["user", "assistant", "system"]),
    content=st.one_of(text, st.lists(block, max_size=5)),
    metadata=st.one_of(st.none(), st.dictionaries(text, json_value, max_size=3)),
)


@settings(max_examples=200, deadline=None)
@given(messages)
def test_every_message_round_trips_losslessly(msg: Msg) -> None:
    assert decode(encode(msg)) == msg


@settings(max_examples=100, deadline=None)
@given(block)
def test_every_block_round_trips(b: Any) -> None:
    assert decode(encode(b)) == b


def test_media_travels_as_raw_bytes() -> None:
    payload = bytes(range(256)) * 40
    msg = Msg("a", [ImageBlock(source=Base64Source(media_type="image/png",
                                                   data=base64.b64encode(payload).decode()))],
              "user")
    wire = encode(msg)
    assert payload in wire
    assert len(wire) < len(base64.b64encode(payload))


def test_non_canonical_base64_survives_as_text() -> None:
    msg = Msg("a", [ImageBlock(source=Base64Source(media_type="image/png", data="not base64!"))],
              "user")
    assert decode(encode(msg)) == msg


def test_nested_plain_values_and_tuples() -> None:
    value = {"a": [1, 2.5, None, True, b"\x00\x01"], "t": (1, "x"), "m": Msg("a", "b", "user")}
    assert decode(encode(value)) == value


def test_unencodable_values_raise_encode_error() -> None:
    with pytest.raises(EncodeError):
        encode(object())
    with pytest.raises(EncodeError):
        encode({1.5: "float keys are not msgpack map keys we accept"} | {"x": {1, 2}})


@pytest.mark.parametrize("data", [
    b"",
    b"\xc1",
    b"\x92\x01",
    msgpack.packb([2, "future format"]),
    msgpack.packb({"not": "a frame"}),
    msgpack.packb([1, msgpack.ExtType(1, b"\x81\xa4name\xa1a")]),  # Msg without role/content
    msgpack.packb([1, msgpack.ExtType(99, b"")]),
    msgpack.packb([1, msgpack.ExtType(3, msgpack.packb(["no.such.Model", {}]))]),
    msgpack.packb([1, msgpack.ExtType(1, b"\xff\xfe")]),
])
def test_malformed_input_raises_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_truncated_frames_raise_decode_error() -> None:
    wire = encode(Msg("a", [TextBlock(text="hello world")], "user"))
    for cut in range(len(wire) - 1):
        with pytest.raises(DecodeError):
            decode(wire[:cut])


def test_oversized_input_is_refused_before_parsing() -> None:
    wire = encode("x" * 1000)
    with pytest.raises(DecodeError, match="exceeds the limit"):
        decode(wire, max_size=100)
    assert decode(wire, max_size=2000) == "x" * 1000


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


def test_non_bytes_input_is_refused() -> None:
    with pytest.raises(DecodeError):
        decode("text")  # type: ignore[arg-type]


PLAIN = {"id": "i", "name": "n", "role": "user", "content": "c", "metadata": None,
         "timestamp": "t"}


def msg_ext(body: dict[str, Any]) -> bytes:
    return msgpack.packb([1, msgpack.ExtType(1, msgpack.packb(body))])


@pytest.mark.parametrize("metadata", [
    None, {}, {"heard": [0.25, 0.5], "eps": 0.2, "who": "x", "raw": b"\0", "n": None},
    {"nested": {"k": 1}}, {"items": [[1]]},
])
def test_a_message_with_a_string_content_travels_as_its_dump(metadata: Any) -> None:
    msg = Msg("host", "hello", "user", metadata=metadata)
    assert encode(msg) == msg_ext(msg.model_dump(mode="python"))  # the wire as it was
    assert decode(encode(msg)) == msg


def test_metadata_shaped_like_a_base64_source_keeps_its_text() -> None:
    msg = Msg("host", "hello", "user", metadata={"type": "base64", "data": "aGk="})
    assert b"aGk=" not in encode(msg)  # packed as raw bytes, as every base64 source is
    assert decode(encode(msg)) == msg


def test_a_plain_message_travels_as_its_dump_and_comes_back_as_if_validated() -> None:
    msg = Msg("host", "hello", "user")
    assert encode(msg) == msg_ext(msg.model_dump(mode="python"))  # the wire as it was
    got = decode(encode(msg))
    assert got == msg and got is not msg
    assert got.__pydantic_fields_set__ == Msg.model_validate(PLAIN).__pydantic_fields_set__
    got.name = "changed"
    got.metadata = {"k": 1}
    assert msg.name == "host" and msg.metadata is None


@pytest.mark.parametrize("change", [
    {"role": "boss"}, {"role": ["user"]}, {"id": 5}, {"name": None}, {"timestamp": 1.5},
    {"content": 7}, {"metadata": "m"}, {"extra": 1},
])
def test_a_message_that_is_almost_plain_is_validated(change: dict[str, Any]) -> None:
    with pytest.raises(DecodeError, match="invalid value on the wire"):
        decode(msg_ext({**PLAIN, **change}))


def test_a_message_not_plain_but_valid_is_validated() -> None:
    body = dict(PLAIN)
    del body["id"]  # a default is drawn, as validation does
    got = decode(msg_ext(body))
    assert got.content == "c" and len(got.id) == 32
    assert decode(msg_ext({**PLAIN, "metadata": {"k": [1]}})).metadata == {"k": [1]}
    assert decode(msg_ext({**PLAIN, "timestamp": b"t"})).timestamp == "t"  # as pydantic does
