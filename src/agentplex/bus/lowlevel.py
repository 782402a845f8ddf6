"""The bus's wire format, for tools that speak the protocol themselves (fuzzers, probes,
clients in other languages), and the spawn allow-list and address checks the cluster
daemons share; agent code never needs it.

A message is a header — the msgpack list ``[PROTO, op, src, corr, target, sender, topic,
exclude, trace]`` — followed by an :func:`agentplex.message.encode` payload, in one frame
or (payloads of 64 KiB and more) two. ``corr`` is the correlation id that pairs a request
with its answer.
"""

from ._allowlist import import_actor_class, module_allowed, resolve_actor_class
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
from ._security import is_loopback

__all__ = [
    "Header",
    "KNOWN_OPS",
    "Op",
    "PROTO",
    "error_from_wire",
    "error_to_wire",
    "import_actor_class",
    "is_loopback",
    "module_allowed",
    "pack_header",
    "parse_header",
    "resolve_actor_class",
    "split_frames",
    "to_frames",
]
