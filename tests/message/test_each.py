"""One value per target on the wire (``encode_each`` / ``decode_each``): each distinct object
once, plain messages as columns built without a validation each, every target its own object,
and a clear ``DecodeError`` for anything else."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentplex.message import DecodeError, Msg, TextBlock, encode
from agentplex.message.lowlevel import decode_each, encode_each

from .test_codec import json_value, messages


class Note(Msg):
    """A subclass of ``Msg``: not a plain message, it takes the general path."""


def plain(text: str, role: str = "user") -> Msg:
    return Msg("host", text, role)  # type: ignore[arg-type]


def test_values_round_trip_in_order_and_plain_messages_equal_validated_ones() -> None:
    m = plain("x")
    rich = Msg("b", [TextBlock(text="hi")], "assistant", metadata={"k": [1]})
    values: list[Any] = [m, rich, plain("y", "system"), "s", {"d": [1]}, None, 3, b"\0",
                         [m], Note(name="n", content="sub", role="user")]
    got = decode_each(encode_each(values), len(values))
    assert got[:-1] == values[:-1]
    assert type(got[-1]) is Msg  # a subclass travels as Msg, as encode() sends it
    assert got[-1].__dict__ == values[-1].__dict__
    validated = Msg.model_validate(m.model_dump())
    assert got[0].__dict__ == validated.__dict__
    assert got[0].__pydantic_fields_set__ == validated.__pydantic_fields_set__
    got[0].name = "changed"  # an ordinary, mutable message
    got[0].metadata = {"a": 1}
    assert got[0].model_dump()["metadata"] == {"a": 1}
    assert m.name == "host" and m.metadata is None


def test_an_object_named_again_travels_once_and_each_target_gets_its_own() -> None:
    same = plain("one for all")
    rich = Msg("b", [TextBlock(text="hi")], "user", metadata={"k": [1]})
    box: dict[str, Any] = {"n": [1]}
    values = [same] * 1000
    once = encode_each(values)
    assert len(once) < len(encode_each([same])) + 1100  # an index entry per target
    assert len(encode_each([plain("one for all") for _ in range(1000)])) > 50 * len(once)
    got = decode_each(once, 1000)
    assert got == values and len({id(v) for v in got}) == 1000
    mixed = [rich, box, same, rich, box, same]
    got = decode_each(encode_each(mixed), 6)
    assert got == mixed
    assert got[0] is not got[3] and got[0].content is not got[3].content
    assert got[0].metadata is not got[3].metadata
    assert got[1] is not got[4] and got[1]["n"] is not got[4]["n"]
    assert got[2] is not got[5]
    got[0].content.append(TextBlock(text="mine"))
    assert got[3].content == [TextBlock(text="hi")]


def test_messages_with_flat_metadata_are_plain_and_others_are_validated() -> None:
    flat = Msg("op", "hi", "user", metadata={"heard": [0.1, 0.2], "eps": 0.2, "who": "x"})
    deep = Msg("op", "hi", "user", metadata={"nested": {"k": [1]}})
    b64 = Msg("op", "hi", "user", metadata={"type": "base64", "data": "aGk="})
    values = [flat, deep, b64, flat]
    got = decode_each(encode_each(values), 4)
    assert got == values
    assert got[0].metadata is not got[3].metadata and got[0].metadata is not flat.metadata
    assert got[0].metadata["heard"] is not got[3].metadata["heard"]
    got[0].metadata["heard"].append(1.0)
    assert got[3].metadata["heard"] == [0.1, 0.2]


def test_no_values() -> None:
    assert decode_each(encode_each([]), 0) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(messages | json_value, max_size=8), st.lists(st.integers(0, 7), max_size=12))
def test_any_values_with_repeats_round_trip(distinct: list[Any], picks: list[int]) -> None:
    values = [distinct[i % len(distinct)] for i in picks] if distinct else []
    got = decode_each(encode_each(values), len(values))
    assert got == values
    mutable = [v for v in got if not isinstance(v, (str, int, float, bool, type(None)))]
    assert len({id(v) for v in mutable}) == len(mutable)


COLUMNS = [["i", "j"], ["n", "n"], ["user", "user"], ["c", "c"], [None, {"k": [1]}],
           ["t", "t"]]
"""Two plain messages' columns: ids, names, roles, contents, metadata, timestamps."""
NONE: list[Any] = [[], [], [], [], [], []]
"""No plain message."""
BAD_ROLE = Msg.model_construct(id="i", name="n", role="boss",  # type: ignore[arg-type]
                               content="x", metadata=None, timestamp="t")


def one(**change: Any) -> list[Any]:
    """The columns of one plain message, ``change`` replacing some."""
    cols = {"ids": ["i"], "names": ["n"], "roles": ["user"], "contents": ["c"],
            "metadata": [None], "stamps": ["t"]}
    return list({**cols, **change}.values())


@pytest.mark.parametrize(("data", "says"), [
    (encode_each([plain("x")]), "1 values for 2 targets"),
    (encode([2, None, *COLUMNS[:2], ["user", "boss"], *COLUMNS[3:], []]), "unknown role"),
    (encode([2, None, ["i", 5], *COLUMNS[1:], []]), "ids are not a list of strings"),
    (encode([2, None, *COLUMNS[:3], "cc", *COLUMNS[4:], []]), "contents are not a list"),
    (encode([2, None, *COLUMNS[:5], ["t"], []]), "1 message timestamps for 2 messages"),
    (encode([2, None, *COLUMNS[:4], [None], COLUMNS[5], []]), "metadata are not one"),
    (encode([2, None, *COLUMNS[:4], [None, {"k": {"deep": 1}}], COLUMNS[5], []]),
     "metadata are not one"),
    (encode([2, None, *COLUMNS[:4], [None, {1: 2}], COLUMNS[5], []]), "malformed payload"),
    (encode([2, None, *COLUMNS[:4], [None, "m"], COLUMNS[5], []]), "metadata are not one"),
    (encode([2, None, *COLUMNS, [[0, "x"]]]), "3 values for 2 targets"),
    (encode([2, [0, 2], *one(), [[1, "x"]]]), "index is not one position"),
    (encode([2, [0, True], *one(), [[1, "x"]]]), "index is not one position"),
    (encode([2, [0], *one(), []]), "index is not one position"),
    (encode([2, None, *one(names=[b"n"]), [[1, "x"]]]), "names are not a list of strings"),
    (encode([2, None, *NONE, [[0, 1], [0, 2]]]), "bad position 0"),
    (encode([2, None, *NONE, [[0, 1], [5, 2]]]), "bad position 5"),
    (encode([2, None, *NONE, [[0, 1], ["1", 2]]]), "not \\[position, value\\]"),
    (encode([2, None, *NONE, [[0, BAD_ROLE], [1, 2]]]), "validation error"),
    (encode([plain("x"), plain("y")]), "not a list of 9 parts"),
    (encode("x"), "not a list of 9 parts"),
    (b"\xc1", "malformed payload"),
])
def test_malformed_input_is_a_decode_error(data: bytes, says: str) -> None:
    with pytest.raises(DecodeError, match=says):
        decode_each(data, 2)


def test_the_size_limit_holds() -> None:
    data = encode_each([plain("x" * 1000)] * 2)
    with pytest.raises(DecodeError, match="exceeds the limit"):
        decode_each(data, 2, max_size=100)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.lists(json_value, max_size=9).map(encode))
def test_random_input_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_each(data, 2)
