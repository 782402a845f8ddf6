"""Small helpers of the ZeroMQ transport: peer links, pending requests, stand-ins."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from ..runtime import ActorError, ActorStopped
from ..runtime.lowlevel import Envelope
from ..tracing.lowlevel import extract_context, send_headers

__all__ = ["PayloadTooLarge"]


class PayloadTooLarge(ActorError, ValueError):
    """A message is larger than the bus's ``max_message_size``."""


class _Pending:
    """A request of ours waiting for its answer (caller side)."""

    __slots__ = ("env", "node", "queue", "retried", "task", "waiter")

    def __init__(self, waiter: Any, node: str, env: Envelope | None = None) -> None:
        self.waiter = waiter
        self.node = node
        self.env = env
        self.retried = False
        self.queue: asyncio.Queue[tuple[str, Any]] | None = None
        self.task: asyncio.Task[None] | None = None

    def fail(self, err: BaseException) -> None:
        if self.queue is not None:
            self.queue.put_nowait(("error", err))
        elif isinstance(self.waiter, asyncio.Future) and not self.waiter.done():
            self.waiter.set_exception(err)


class _Link:
    """The DEALER to one peer. Sends go out at once through a blocking-free shadow socket;
    only when the high-water mark is reached do they queue (in order) and wait."""

    __slots__ = ("backlog", "sock", "sync")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.sync: Any = zmq.Socket.shadow(sock.underlying)
        self.backlog = 0

    def try_send(self, frames: list[bytes], copy: bool) -> bool:
        if self.backlog:
            return False
        try:
            self.sync.send_multipart(frames, zmq.NOBLOCK, copy=copy)
        except zmq.Again:
            return False
        return True

    def queue(self, frames: list[bytes], copy: bool) -> asyncio.Future[Any]:
        self.backlog += 1
        fut: asyncio.Future[Any] = self.sock.send_multipart(frames, copy=copy)
        fut.add_done_callback(self._sent)
        return fut

    def _sent(self, fut: asyncio.Future[Any]) -> None:
        self.backlog -= 1
        if not fut.cancelled():
            fut.exception()  # retrieved: a failure is reported by whoever awaited it

    def close(self) -> None:
        self.sock.close(linger=0)


class _RemoteReply:
    """Stands in for a remote caller's reply future: answering sends the reply at once."""

    __slots__ = ("_answer", "_done")

    def __init__(self, answer: Callable[[bool, Any], None]) -> None:
        self._answer = answer
        self._done = False

    def done(self) -> bool:
        return self._done

    def _settle(self, ok: bool, value: Any) -> None:
        if self._done:
            raise asyncio.InvalidStateError("the reply was already given")
        self._done = True
        self._answer(ok, value)

    def set_result(self, value: Any) -> None:
        self._settle(True, value)

    def set_exception(self, exc: BaseException) -> None:
        self._settle(False, exc)

    def cancel(self) -> bool:
        if self._done:
            return False
        self._settle(False, ActorStopped("the call was interrupted"))
        return True

    def abandon(self) -> None:
        """The caller left: answer nothing."""
        self._done = True


class _Serving:
    """A request we host for a peer (the stand-in side)."""

    __slots__ = ("credit", "env", "task", "wake")

    def __init__(self, env: Envelope, credit: int = 0) -> None:
        self.env = env
        self.credit = credit
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


def _trace_headers(trace: Any, destination: str, node: str) -> dict[str, str] | None:
    """Headers carrying a ``send`` span, child of the caller's trace context (``None`` when
    tracing is off)."""
    if trace is None:
        return None
    if type(trace) is dict:  # headers already (an OTel Context is a dict subclass)
        trace = extract_context(trace)
    return send_headers(destination, trace, **{"agentplex.node": node})
