"""``agentplex.connect``: a runtime on the ZeroMQ bus in one call."""

from __future__ import annotations

from typing import Any

from ..runtime import Runtime
from ._zmq import ZmqTransport

__all__ = ["connect"]


def connect(head: str | None = None, bind: str = "tcp://127.0.0.1:0", *,
            default_timeout: float = 300.0, mailbox_size: int = 1024,
            **options: Any) -> Runtime:
    """A :class:`Runtime` whose actors reach every actor on the bus by name.

    ``head`` is the head process's endpoint; leave it out to *be* the head. ``options``
    go to :class:`ZmqTransport` (keys, allow, heartbeats, limits, ...). Use the result as
    ``async with agentplex.connect("tcp://10.0.0.1:5555", keys=...) as rt:``.
    """
    transport = ZmqTransport(bind, head=head, **options)
    return Runtime(transport, default_timeout=default_timeout, mailbox_size=mailbox_size)
