"""Serving peers: requests for our actors, their replies and streams, mailbox overflow and
tell acknowledgements, topic deliveries and remote spawns."""


from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from ..message import EncodeError, encode
from ..runtime import ActorError, ActorNotFound, ActorStopped, HandlerError, MailboxFull
from ..runtime.lowlevel import Envelope, Kind, StreamChannel
from ..tracing.lowlevel import receive_context
from ._core import _Core, log
from ._frames import (
    Header,
    Op,
)
from ._parts import PayloadTooLarge, _RemoteReply, _Serving
from ._worker import build_actor

if TYPE_CHECKING:
    from ..runtime._cell import ActorCell


class _Hosting(_Core):
    """The hosting side of the transport: what peers ask of the actors living here."""

    def _on_request(self, h: Header, data: bytes) -> None:
        target = h.target
        if target is None:
            self._drop("request without a target")
            return
        payload = self._decode(h, data)
        cell = self.runtime._cells.get(target)
        if cell is None or not cell.accepting:
            if h.op == Op.TELL:
                self._ack(h.src)
            self.stats["unknown_actor"] += 1
            err = ActorNotFound(f"no actor named {target!r} on node {self.node_id!r}",
                                actor=target)
            if h.op == Op.TELL:  # give the tell back: its sender may find the actor's new home
                self._reply_error(h, err, tell=data, sender=h.sender)
            else:
                self._reply_error(h, err)
            return
        op = h.op
        reply: Any = None
        if op != Op.TELL and h.corr is None:
            self._drop(f"{op} without a correlation id")
            return
        key = (h.src, h.corr or 0)
        trace = receive_context(target, h.trace, **{"agentplex.node": self.node_id})
        if h.src not in self._peers:
            self._peer(h.src)  # watch the caller's heartbeat: if it dies, its handler stops
        if op in (Op.CALL, Op.CONTROL):
            reply = _RemoteReply(lambda ok, value: self._call_done(h, key, ok, value))
            env = Envelope(op, target, payload, waiter=reply, sender=h.sender,
                           correlation_id=h.corr,
                           trace=trace)
            self._serving[key] = _Serving(env)
        else:
            if op == Op.STREAM:
                reply = StreamChannel(self.stream_window)
            env = Envelope(op, target, payload, waiter=reply, sender=h.sender,
                           correlation_id=h.corr,
                           trace=trace)
            if op == Op.STREAM:
                serving = self._serving[key] = _Serving(env, self.stream_window)
                serving.task = self._spawn_task(self._pump(h, key, serving, cell))
        self._enqueue(cell, env, h.src if op == Op.TELL else None)

    def _call_done(self, h: Header, key: tuple[str, int], ok: bool, value: Any) -> None:
        self._serving.pop(key, None)
        if self._closed:
            return
        if not ok:
            self._reply_error(h, value)
        else:
            try:
                data = encode(value)
            except EncodeError as exc:
                self._reply_error(h, HandlerError(str(exc), actor=h.target,
                                                  exc_type="EncodeError"))
                return
            try:
                self._frames(h, data)
            except PayloadTooLarge as exc:
                self._reply_error(h, exc)
                return
            self._reply(h, Op.REPLY, data)

    async def _pump(self, h: Header, key: tuple[str, int], s: _Serving, cell: ActorCell
                    ) -> None:
        """Send a hosted stream's items to the caller, as the caller's credit allows."""
        channel: StreamChannel[Any] = s.env.waiter
        try:
            while True:
                try:
                    more, item = await channel.receive()
                except Exception as exc:
                    self._reply_error(h, exc)
                    return
                if not more:
                    self._reply(h, Op.END, b"")
                    return
                while s.credit <= 0:
                    s.wake.clear()
                    await s.wake.wait()
                s.credit -= 1
                try:
                    data = encode(item)
                    await self._send(h.src, Header(Op.ITEM, self.node_id, h.corr, h.target),
                                     data, self.heartbeat_timeout)
                except (EncodeError, ActorError) as exc:
                    channel.close()
                    cell.interrupt(s.env)
                    self._reply_error(h, HandlerError(str(exc), actor=h.target,
                                                      exc_type=type(exc).__name__))
                    return
        finally:
            self._serving.pop(key, None)

    def _on_credit(self, h: Header, data: bytes) -> None:
        s = self._serving.get((h.src, h.corr or 0))
        n = self._decode(h, data)
        if s is not None and type(n) is int and n > 0:
            s.credit += n
            s.wake.set()

    def _on_cancel(self, h: Header) -> None:
        s = self._serving.pop((h.src, h.corr or 0), None)
        if s is not None:
            self._abandon(s)

    def _abandon(self, s: _Serving) -> None:
        """The caller of ``s`` left: skip or interrupt its handler."""
        reply = s.env.waiter
        if isinstance(reply, StreamChannel):
            reply.close()
        elif isinstance(reply, _RemoteReply):
            reply.abandon()
        if s.task is not None:
            s.task.cancel()
        cell = self.runtime._cells.get(s.env.target)
        if cell is not None:
            cell.interrupt(s.env)

    def _enqueue(self, cell: ActorCell, env: Envelope, tell_from: str | None) -> None:
        """Mailbox in arrival order; a full mailbox holds later envelopes back, bounded.

        A tell is acknowledged to ``tell_from`` once it is in the mailbox (or failed): the
        sender's window of unacknowledged tells is what bounds this overflow.
        """
        held = self._overflow.get(cell.name)
        if held is None:
            try:
                if cell.offer(env):
                    if tell_from is not None:
                        self._ack(tell_from)
                    return
            except ActorError as exc:
                self._fail_env(env, exc, tell_from)
                return
            held = self._overflow[cell.name] = deque()
            self._spawn_task(self._drain(cell, held))
        if self._overflowing >= self.max_overflow:
            self._fail_env(env, MailboxFull(f"mailbox of {cell.name!r} is full", actor=cell.name),
                           tell_from)
            return
        held.append((env, tell_from))
        self._overflowing += 1

    async def _drain(self, cell: ActorCell, held: deque[tuple[Envelope, str | None]]) -> None:
        try:
            while held:
                env, tell_from = held[0]
                try:
                    await cell.put(env, self.runtime.default_timeout)
                except ActorError as exc:
                    self._fail_env(env, exc, None)
                held.popleft()
                self._overflowing -= 1
                if tell_from is not None:
                    self._ack(tell_from)
        finally:
            self._overflowing -= len(held)
            for env, tell_from in held:
                self._fail_env(env, ActorStopped("the bus transport was closed"), tell_from)
            self._overflow.pop(cell.name, None)

    def _ack(self, node: str) -> None:
        """Count a tell from ``node`` as taken; acknowledgements go out in batches."""
        n = self._acks.get(node, 0) + 1
        self._acks[node] = n
        if n >= 64:
            self._flush_acks(node)
        elif n == 1:
            asyncio.get_running_loop().call_later(0.002, self._flush_acks, node)

    def _flush_acks(self, node: str) -> None:
        n = self._acks.pop(node, 0)
        if n and not self._closed and node in self._nodes:
            self._send_nowait(node, Header(Op.ACK, self.node_id), encode(n))

    def _fail_env(self, env: Envelope, exc: ActorError, tell_from: str | None = None) -> None:
        if tell_from is not None:
            self._ack(tell_from)
        reply = env.waiter
        if isinstance(reply, StreamChannel):
            reply.fail(exc)
        elif isinstance(reply, _RemoteReply):
            if not reply.done():
                reply.set_exception(exc)
        else:
            n = self.stats["tell_failed"] = self.stats["tell_failed"] + 1
            if n & (n - 1) == 0:
                log.warning("dropped a %s for %r (%d so far): %s", env.kind, env.target, n, exc)

    def _on_publish(self, h: Header, data: bytes) -> None:
        env = Envelope(Kind.PUBLISH, "", self._decode(h, data), sender=h.sender, topic=h.topic,
                       trace=receive_context(h.topic or "", h.trace,
                                             **{"agentplex.node": self.node_id}),
                       exclude=h.exclude)
        self._spawn_task(self._publish_here(h, env))

    async def _publish_here(self, h: Header, env: Envelope) -> None:
        try:
            await self.runtime._publish_local(env, self.runtime.default_timeout)
        except Exception as exc:
            self._reply_error(h, exc)
        else:
            self._reply(h, Op.REPLY, b"")

    async def _on_spawn(self, h: Header, spec: Any) -> None:
        try:
            actor, name = build_actor(spec, self.spawn_allow)
            ref = await self.runtime.spawn(actor, name)
        except Exception as exc:
            log.warning("refused a remote spawn from %r: %s", h.src, exc)
            self._reply_error(h, exc)
        else:
            self._reply(h, Op.REPLY, encode(ref.name))
