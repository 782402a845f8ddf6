"""The ZeroMQ bus: the same actors across processes and machines, msgpack on the wire,
CurveZMQ security, heartbeats and a head-kept name directory."""

from ._connect import connect
from ._directory import HEAD, Directory
from ._errors import FrameError, InsecureBindError, PayloadTooLarge, SpawnRefused, UnknownPeer
from ._security import (
    KeyPair,
    generate_keys,
    keypair_from_env,
    load_keypair,
    load_public_key,
)
from ._zmq import ZmqTransport

__all__ = [
    "Directory",
    "FrameError",
    "HEAD",
    "InsecureBindError",
    "KeyPair",
    "PayloadTooLarge",
    "SpawnRefused",
    "UnknownPeer",
    "ZmqTransport",
    "connect",
    "generate_keys",
    "keypair_from_env",
    "load_keypair",
    "load_public_key",
]
