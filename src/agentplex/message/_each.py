"""One value per target on the wire: the messages of a fan-out that gives each of its
targets its own (``call_many(refs, PerActor(messages))``).

:func:`encode_each` writes every distinct value once (by identity: one ``Msg`` object given
to many targets travels once, each target names it by its position) and plain messages —
a ``Msg`` whose content is a string and whose metadata is ``None`` or a flat dict, as
simulations send them — as columns instead of one nested map each. :func:`decode_each`
checks the shape and every column's types before it builds anything, builds those messages
without a pydantic validation each (the checks are the validation: a string in each field,
a known role, plain metadata), and validates everything else as
:func:`~agentplex.message.decode` does. A value
named by several targets is given to the first and deep-copied for each other one, so no
two targets ever share a mutable object.

The body, inside the codec's ``[FORMAT_VERSION, body]``::

    [n, index, ids, names, roles, contents, metadata, timestamps, others]

``n`` values; ``index`` is ``None`` when every value is distinct (in order) or else ``n``
positions into the distinct values; the six columns hold the plain messages, which take
the distinct positions that ``others`` (``[[position, value], ...]``) leaves free, in order.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

from ._codec import DEFAULT_MAX_SIZE, decode, encode, plain_metadata
from ._copy import deep_copy
from ._errors import DecodeError
from ._msg import FIELDS, ROLES, Msg, assemble

__all__ = ["decode_each", "encode_each"]


def encode_each(values: Sequence[Any]) -> bytes:
    """Encode ``values`` (one per target, anything :func:`encode` takes) for
    :func:`decode_each`: each distinct object once, plain messages as columns."""
    seen: dict[int, int] = {}
    index: list[int] = []
    ids: list[str] = []
    names: list[str] = []
    roles: list[str] = []
    contents: list[str] = []
    metas: list[dict[str, Any] | None] = []
    stamps: list[str] = []
    others: list[list[Any]] = []
    for value in values:
        key = id(value)  # (``values`` keeps every object alive: ids are not reused)
        pos = seen.get(key)
        if pos is None:
            pos = seen[key] = len(seen)
            if type(value) is Msg:
                d = value.__dict__
                content = d["content"]
                if (type(content) is str and type(d["id"]) is str
                        and type(d["name"]) is str and type(d["timestamp"]) is str
                        and plain_metadata(d["metadata"])):
                    ids.append(d["id"])
                    names.append(d["name"])
                    roles.append(d["role"])
                    contents.append(content)
                    metas.append(d["metadata"])
                    stamps.append(d["timestamp"])
                    index.append(pos)
                    continue
            others.append([pos, value])
        index.append(pos)
    distinct = len(seen) == len(index)  # then ``index`` is 0, 1, 2, ...
    return encode([len(index), None if distinct else index, ids, names, roles, contents,
                   metas, stamps, others])


_FREE: Any = object()
"""A distinct position not filled yet."""

_STR = frozenset({str})
_INT = frozenset({int})
_ALL_FIELDS = set(FIELDS)


def _strings(column: Any, what: str) -> list[str]:
    if type(column) is not list or not _STR.issuperset(map(type, column)):
        raise DecodeError(f"per-target values: the {what} are not a list of strings")
    return column


def decode_each(data: bytes | bytearray | memoryview, count: int, *,
                max_size: int = DEFAULT_MAX_SIZE) -> list[Any]:
    """The ``count`` values :func:`encode_each` encoded, each target's its own object.

    Raises :class:`DecodeError` (and never anything else) when ``data`` is not that, holds
    another number of values, or any value fails validation: the whole frame's shape and
    columns are checked before any plain message is built, and nothing is returned in part.

    The cyclic garbage collector is held off meanwhile: everything decoded lives on (it is
    the targets' messages), and with messages that carry metadata its passes over the
    containers being made took more than half the time.
    """
    if not gc.isenabled():
        return _decode_each(data, count, max_size)
    gc.disable()
    try:
        return _decode_each(data, count, max_size)
    finally:
        gc.enable()


def _decode_each(data: bytes | bytearray | memoryview, count: int, max_size: int
                 ) -> list[Any]:
    body = decode(data, max_size=max_size)
    if type(body) is not list or len(body) != 9:
        raise DecodeError("per-target values: not a list of 9 parts")
    n, index, ids, names, roles, contents, metas, stamps, others = body
    if type(n) is not int or n != count:
        raise DecodeError(f"per-target values: {n!r} values for {count} targets")
    rows = len(_strings(ids, "message ids"))
    for column, what in ((names, "names"), (roles, "roles"), (contents, "contents"),
                         (stamps, "timestamps")):
        if len(_strings(column, what)) != rows:
            raise DecodeError(f"per-target values: {len(column)} message {what} for "
                              f"{rows} messages")
    if type(metas) is not list or len(metas) != rows or (
            metas.count(None) != rows and not all(map(plain_metadata, metas))):
        raise DecodeError("per-target values: the messages' metadata are not one plain "
                          "dict or None each")
    if not ROLES.issuperset(roles):
        raise DecodeError(f"per-target values: a message has an unknown role "
                          f"{next(r for r in roles if r not in ROLES)!r}")
    if type(others) is not list or not all(
            type(o) is list and len(o) == 2 and type(o[0]) is int for o in others):
        raise DecodeError("per-target values: the other values are not [position, value]")
    size = rows + len(others)
    if index is None:
        if size != n:
            raise DecodeError(f"per-target values: {size} values for {n} targets")
    elif type(index) is not list or len(index) != n or not _INT.issuperset(
            map(type, index)) or (n and not 0 <= min(index) <= max(index) < size):
        raise DecodeError("per-target values: the index is not one position per target")
    distinct: list[Any] = [_FREE] * size if others else []
    for pos, value in others:
        if not 0 <= pos < size or distinct[pos] is not _FREE:
            raise DecodeError(f"per-target values: bad position {pos!r}")
        distinct[pos] = value
    fields = _ALL_FIELDS
    built = [assemble(Msg, {"id": i, "name": name, "role": role, "content": content,
                            "metadata": meta, "timestamp": stamp}, fields.copy())
             for i, name, role, content, meta, stamp in zip(ids, names, roles, contents,
                                                            metas, stamps, strict=True)]
    if others:
        free = iter(built)
        distinct = [next(free) if value is _FREE else value for value in distinct]
    else:
        distinct = built
    if index is None:
        return distinct
    out: list[Any] = []
    given: set[int] = set()
    for k in index:
        value = distinct[k]
        if k in given:  # a value named again: this target gets its own copy
            value = deep_copy(value)
        else:
            given.add(k)
        out.append(value)
    return out
