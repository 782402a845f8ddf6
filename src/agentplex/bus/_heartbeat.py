"""Heartbeats sent from a thread of their own, so that a node's peers hear from it for as
long as its process lives, whatever its event loop is doing (a long synchronous stretch,
tens of thousands of calls being sent or answered).

The thread has one DEALER of its own per peer (sockets are not shared between threads),
connected to the peer's ROUTER like the node's links, and pings every peer the node has a
link to once per interval. A ping carries the number of times the node has joined the head
as its correlation id; a peer that does not know the node answers it with an
:class:`~agentplex.bus.UnknownPeer` error, which the thread hands to the event loop (the
head's answer makes the node join again). Judging a peer silent stays with the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import zmq

from ._errors import FrameError
from ._frames import Header, Op, Wire
from ._security import KeyPair

__all__ = ["Heartbeats", "Target"]

log = logging.getLogger("agentplex.bus")

Target = tuple[str, str, str]
"""A peer to ping: its node id, endpoint and CURVE public key."""

_NOBLOCK, _EVENTS, _POLLIN = int(zmq.NOBLOCK), int(zmq.EVENTS), int(zmq.POLLIN)


class Heartbeats:
    """The heartbeat thread of one transport.

    ``targets()`` gives the peers to ping (read from the thread: it must return an
    immutable snapshot), ``joins()`` the correlation id pings carry; ``refused(node, corr)``
    is called in the event loop when ``node`` answered a ping with an error.
    """

    def __init__(self, ctx: zmq.Context[Any], node_id: str, keys: KeyPair | None,
                 interval: float, targets: Callable[[], tuple[Target, ...]],
                 joins: Callable[[], int], refused: Callable[[str, int | None], None]) -> None:
        self._ctx: zmq.Context[Any] = zmq.Context.shadow(ctx.underlying)
        self._node_id = node_id
        self._keys = keys
        self._interval = interval
        self._targets = targets
        self._joins = joins
        self._refused = refused
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"agentplex-heartbeat-{node_id}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Send no more pings (the thread closes its sockets and ends)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _socket(self, target: Target) -> Any:
        _, endpoint, key = target
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 4)  # a peer that is away gets no pile of pings
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if self._keys is not None:
            sock.curve_secretkey = self._keys.secret.encode("ascii")
            sock.curve_publickey = self._keys.public.encode("ascii")
            sock.curve_serverkey = key.encode("ascii")
        sock.connect(endpoint)
        return sock

    def _run(self) -> None:
        wire = Wire()  # its own packer: a Wire is not shared between threads
        sockets: dict[Target, Any] = {}
        try:
            while not self._stop.wait(self._interval):
                targets = self._targets()
                for gone in [t for t in sockets if t not in targets]:
                    sockets.pop(gone).close(linger=0)
                ping = wire.header(Header(Op.PING, self._node_id, self._joins()))
                for target in targets:
                    sock = sockets.get(target)
                    if sock is None:
                        sock = sockets[target] = self._socket(target)
                    with contextlib.suppress(zmq.Again):  # not connected yet, or queue full
                        sock.send(ping, _NOBLOCK)
                    self._read(wire, target[0], sock)
        except Exception:  # the context was destroyed under us, or worse: say so and end
            if not self._stop.is_set():
                log.exception("the heartbeat thread stopped")
        finally:
            for sock in sockets.values():
                sock.close(linger=0)

    def _read(self, wire: Wire, node: str, sock: Any) -> None:
        """Hand what ``node`` answered our pings with (an error: it does not know us) to the
        event loop."""
        while sock.get(_EVENTS) & _POLLIN:
            frames = sock.recv_multipart(_NOBLOCK)
            try:
                h, _ = wire.split(frames)
            except FrameError:
                continue
            if h.op == Op.ERROR and h.src == node:
                self._loop.call_soon_threadsafe(self._refused, node, h.corr)
