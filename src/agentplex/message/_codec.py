"""The msgpack wire codec.

Everything that crosses a process boundary is encoded here: plain msgpack values, ``Msg``,
content blocks and registered pydantic models. Inline media (base64 sources) travel as raw
bytes rather than base64 text, a third smaller. Nothing is ever unpickled: a decoded object
is either a plain msgpack value or a model validated by pydantic.

The encoded form is ``[FORMAT_VERSION, body]``; a decoder refuses other versions.
"""

from __future__ import annotations

import base64
import binascii
import threading
from typing import Any

import msgpack
from pydantic import BaseModel, ValidationError

from ._blocks import Base64Source, Block, block_adapter
from ._errors import DecodeError, EncodeError
from ._msg import FIELDS, ROLES, Msg, assemble

__all__ = [
    "DEFAULT_MAX_SIZE",
    "FORMAT_VERSION",
    "decode",
    "encode",
    "register_wire_type",
]

FORMAT_VERSION = 1
DEFAULT_MAX_SIZE = 64 * 1024 * 1024
"""Largest encoded payload :func:`decode` accepts unless told otherwise (64 MiB)."""

_EXT_MSG = 1
_EXT_BLOCK = 2
_EXT_MODEL = 3
_EXT_TUPLE = 4

_models: dict[str, type[BaseModel]] = {}
_model_names: dict[type[BaseModel], str] = {}


def register_wire_type(cls: type[BaseModel], name: str | None = None) -> type[BaseModel]:
    """Let instances of the pydantic model ``cls`` cross the wire.

    ``name`` (default: the class's qualified import path) identifies the class on the wire;
    both ends must register it. Usable as a class decorator.
    """
    key = name or f"{cls.__module__}.{cls.__qualname__}"
    known = _models.get(key)
    if known is not None and known is not cls:
        raise ValueError(f"wire name {key!r} is already registered for {known!r}")
    _models[key] = cls
    _model_names[cls] = key
    return cls


# -- media: base64 text <-> raw bytes -----------------------------------------------------


def _pack_media(obj: Any) -> Any:
    """Replace canonical base64 ``data`` strings in a dumped block tree by raw bytes."""
    if isinstance(obj, dict):
        if obj.get("type") == "base64" and isinstance(obj.get("data"), str):
            raw = _b64_raw(obj["data"])
            if raw is not None:
                return {**obj, "data": raw}
            return obj
        return {k: _pack_media(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_pack_media(v) for v in obj]
    return obj


def _unpack_media(obj: Any) -> Any:
    if isinstance(obj, dict):
        if obj.get("type") == "base64" and isinstance(obj.get("data"), bytes):
            return {**obj, "data": base64.b64encode(obj["data"]).decode("ascii")}
        return {k: _unpack_media(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack_media(v) for v in obj]
    return obj


def _b64_raw(text: str) -> bytes | None:
    """Bytes of ``text`` if it is canonical base64 (so that re-encoding gives it back)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


# -- encode ---------------------------------------------------------------------------------

_BLOCK_TYPES: frozenset[type] = frozenset(Block.__args__)  # type: ignore[attr-defined]



_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


def plain_metadata(metadata: Any) -> bool:
    """Whether ``metadata`` is ``None`` or a flat dict (string keys; scalars or lists of
    scalars as values; not a base64 source's shape): what a message's validation and its
    media packing would leave exactly as it is."""
    if metadata is None:
        return True
    if type(metadata) is not dict or metadata.get("type") == "base64":
        return False
    for key, value in metadata.items():
        if type(key) is not str:
            return False
        kind = type(value)
        if kind not in _SCALARS and not (kind is list
                                         and _SCALARS.issuperset(map(type, value))):
            return False
    return True


def _default(obj: Any) -> Any:
    if isinstance(obj, Msg):
        d = obj.__dict__
        if type(obj) is Msg and type(d["content"]) is str and plain_metadata(d["metadata"]):
            return msgpack.ExtType(_EXT_MSG, _packb(d))  # what model_dump would give
        body = _pack_media(obj.model_dump(mode="python", exclude_defaults=False))
        return msgpack.ExtType(_EXT_MSG, _packb(body))
    if isinstance(obj, Base64Source) or type(obj) in _BLOCK_TYPES:
        return msgpack.ExtType(_EXT_BLOCK, _packb(_pack_media(obj.model_dump(mode="python"))))
    if isinstance(obj, tuple):
        return msgpack.ExtType(_EXT_TUPLE, _packb(list(obj)))
    if isinstance(obj, BaseModel):
        name = _model_names.get(type(obj))
        if name is None:
            raise EncodeError(
                f"{type(obj).__qualname__} is not registered for the wire; "
                "call agentplex.message.register_wire_type() on it"
            )
        body = _pack_media(obj.model_dump(mode="json"))
        return msgpack.ExtType(_EXT_MODEL, _packb([name, body]))
    raise EncodeError(f"cannot encode {type(obj).__qualname__!r} for the wire")


class _Packers(threading.local):
    """Packers ready for use in this thread (a packer is much cheaper to reuse than to
    make; one packing inside another, through ``_default``, takes another)."""

    def __init__(self) -> None:
        self.free: list[msgpack.Packer] = []


_packers = _Packers()


def _packb(obj: Any) -> bytes:
    free = _packers.free
    packer = free.pop() if free else msgpack.Packer(default=_default, use_bin_type=True,
                                                     strict_types=True)
    try:
        return packer.pack(obj)
    except EncodeError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"cannot encode value for the wire: {exc}") from exc
    finally:  # (a packer that raised has dropped what it had packed)
        free.append(packer)


def encode(obj: Any) -> bytes:
    """Encode ``obj`` (msgpack values, ``Msg``, blocks, registered models) to bytes."""
    return _packb([FORMAT_VERSION, obj])


# -- decode ---------------------------------------------------------------------------------

def _plain(body: Any) -> bool:
    """Whether ``body`` is a message with a string content and plain metadata, each field
    of the type its validation would demand (so the message needs no validation)."""
    return (type(body) is dict and body.keys() == FIELDS and type(body["content"]) is str
            and type(body["id"]) is str and type(body["name"]) is str
            and type(body["timestamp"]) is str and type(body["role"]) is str
            and body["role"] in ROLES and plain_metadata(body["metadata"]))


class _Decoder:
    __slots__ = ()

    def unpack(self, data: bytes) -> Any:
        return msgpack.unpackb(
            data,
            ext_hook=self.ext_hook,
            raw=False,
            strict_map_key=True,
            use_list=True,
        )

    def ext_hook(self, code: int, data: bytes) -> Any:
        if code == _EXT_TUPLE:
            return tuple(self.unpack(data))
        body = self.unpack(data)
        if code == _EXT_MSG and _plain(body):  # checked: built without a validation
            return assemble(Msg, body, set(FIELDS))
        body = _unpack_media(body)
        if code == _EXT_MSG:
            return Msg.model_validate(body)
        if code == _EXT_BLOCK:
            if isinstance(body, dict) and body.get("type") == "base64":
                return Base64Source.model_validate(body)
            return block_adapter.validate_python(body)
        if code == _EXT_MODEL:
            if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], str)):
                raise DecodeError("malformed model extension")
            cls = _models.get(body[0])
            if cls is None:
                raise DecodeError(f"unknown model {body[0]!r} on the wire")
            return cls.model_validate(body[1])
        raise DecodeError(f"unknown extension type {code}")


_DECODER = _Decoder()


def decode(data: bytes | bytearray | memoryview, *, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """Decode what :func:`encode` produced.

    Raises :class:`DecodeError` (and never anything else) when ``data`` is larger than
    ``max_size`` bytes, malformed, truncated, of another format version, or holds a value
    that fails validation. No partly built object is ever returned.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise DecodeError(f"payload of {len(data)} bytes exceeds the limit of {max_size}")
    try:
        top = _DECODER.unpack(bytes(data))
    except DecodeError:
        raise
    except ValidationError as exc:
        raise DecodeError(f"invalid value on the wire: {exc.error_count()} validation errors: "
                          f"{exc.errors()[0]['msg']}") from None
    except RecursionError:
        raise DecodeError("payload nested too deeply") from None
    except Exception as exc:  # msgpack raises many types; none may escape
        raise DecodeError(f"malformed payload: {type(exc).__name__}: {exc}") from None
    if not (isinstance(top, list) and len(top) == 2):
        raise DecodeError("payload is not an agentplex frame")
    if top[0] != FORMAT_VERSION:
        raise DecodeError(f"unsupported format version {top[0]!r} (expected {FORMAT_VERSION})")
    return top[1]
