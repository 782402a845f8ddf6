"""The bus's wire format, for tools that speak the protocol themselves (fuzzers, probes,
clients in other languages); agent code never needs it.

A message is a header — the msgpack list ``[PROTO, op, src, corr, target, sender, topic,
exclude, trace]`` — followed by an :func:`agentplex.message.encode` payload, in one frame
or (payloads of 64 KiB and more) two. ``corr`` is the correlation id that pairs a request
with its answer.
"""

from ._frames import (
    KNOWN_OPS,
    PROTO,
    Header,
    Op,
    error_from_wire,
    error_to_wire,
    pack_header,
    parse_header,
    split_frames,
    to_frames,
)

__all__ = [
    "KNOWN_OPS",
    "PROTO",
    "Header",
    "Op",
    "error_from_wire",
    "error_to_wire",
    "pack_header",
    "parse_header",
    "split_frames",
    "to_frames",
]
