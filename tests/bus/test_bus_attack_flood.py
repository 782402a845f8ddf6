"""A joined peer that floods a node with tells to names that do not exist and reads none of
the answers: what comes back is a short error, not the payload, and what the node holds
for that peer is bounded in bytes, not only in messages. Refused CURVE clients are logged
at a bounded rate."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import zmq
import zmq.asyncio

from agentplex import Runtime
from agentplex.bus import KeyPair, ZmqTransport
from agentplex.bus.lowlevel import Header, Op, split_frames, to_frames
from agentplex.message import decode, encode
from agentplex.runtime import PeerLost

pytestmark = pytest.mark.anyio


class Rogue:
    """A raw peer that joins the head's directory (HELLO), then talks from a DEALER and
    receives the head's answers on a ROUTER of its own (which it may leave unread)."""

    def __init__(self, head: str) -> None:
        self.ctx = zmq.asyncio.Context()
        self.inbox = self.ctx.socket(zmq.ROUTER)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.inbox.setsockopt(zmq.RCVHWM, 100)
        port = self.inbox.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.out = self.ctx.socket(zmq.DEALER)
        self.out.setsockopt(zmq.LINGER, 0)
        self.out.connect(head)

    async def join(self) -> None:
        await self.out.send_multipart(to_frames(Header(Op.HELLO, "rogue", 1), encode(
            {"endpoint": self.endpoint, "key": ""})))
        for _ in range(20):  # the answer (a heartbeat may come first)
            header, _ = await self.answer()
            if header.corr == 1 and header.op in (Op.RESULT, Op.ERROR):
                break
        assert header.op == Op.RESULT, header

    async def tell(self, target: str, payload: bytes) -> None:
        await self.out.send_multipart(to_frames(Header(Op.TELL, "rogue", None, target),
                                                encode(payload)))

    async def answer(self) -> tuple[Header, bytes]:
        frames = await asyncio.wait_for(self.inbox.recv_multipart(), 20)
        return split_frames(frames[1:])

    def close(self) -> None:
        self.ctx.destroy(linger=0)


async def test_an_undeliverable_big_tell_comes_back_short() -> None:
    async with Runtime(ZmqTransport(), default_timeout=20) as rt:
        head: ZmqTransport = rt.transport  # type: ignore[assignment]
        rogue = Rogue(head.endpoint)
        try:
            await rogue.join()
            await rogue.tell("nobody", b"x" * 60_000)
            await rogue.tell("nobody", b"y" * 100)
            sizes: list[int] = []
            returned: list[Any] = []
            while len(sizes) < 2:
                header, data = await rogue.answer()
                if header.op != Op.ERROR:
                    continue  # a heartbeat
                sizes.append(len(data))
                returned.append(decode(data).get("tell"))
            assert sizes[0] < 2_000, sizes  # the 60 KB tell: a short error only
            assert returned[0] is None
            assert returned[1] is not None and decode(returned[1]) == b"y" * 100
        finally:
            rogue.close()


async def test_a_peer_that_reads_nothing_gets_a_bounded_backlog() -> None:
    transport = ZmqTransport(hwm=50, max_backlog=64 * 1024)
    async with Runtime(transport, default_timeout=20):
        rogue = Rogue(transport.endpoint)
        try:
            await rogue.join()
            for _ in range(20_000):  # each answered with a short error the rogue never reads
                await rogue.tell("nobody", b"z" * 4096)
            for _ in range(400):
                if transport.stats["send_dropped"]:
                    break
                await asyncio.sleep(0.05)
            assert transport.stats["send_dropped"] > 0
            link = transport._peers.links["rogue"]
            assert link.queued_bytes <= 64 * 1024 + 16 * 1024
        finally:
            rogue.close()


async def test_refused_curve_clients_are_logged_at_a_bounded_rate(
        caplog: pytest.LogCaptureFixture) -> None:
    head_keys, rogue_keys = KeyPair.generate(), KeyPair.generate()
    head_t = ZmqTransport(keys=head_keys, allow=[])
    async with Runtime(head_t, default_timeout=20):
        ctx = zmq.asyncio.Context()
        caplog.set_level(logging.WARNING, logger="agentplex.bus")
        try:
            for _ in range(600):  # new strangers until 20 have been refused
                if head_t.allow.refused >= 20:
                    break
                sock = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.curve_secretkey = rogue_keys.secret.encode()
                sock.curve_publickey = rogue_keys.public.encode()
                sock.curve_serverkey = head_keys.public.encode()
                sock.connect(head_t.endpoint)
                await asyncio.sleep(0.1)
        finally:
            ctx.destroy(linger=0)
        assert head_t.allow.refused >= 20
        lines = [r for r in caplog.records if "unknown CURVE key" in r.getMessage()]
        assert 1 <= len(lines) <= 3, [r.getMessage() for r in lines]


async def test_a_hello_is_answered_without_waiting_on_the_joiner() -> None:
    """The joiner gets the directory in the hello's answer; the head does not first wait
    (up to its heartbeat timeout, here 60 s) for the joiner to acknowledge a pushed copy."""
    transport = ZmqTransport(heartbeat_timeout=60.0)
    async with Runtime(transport, default_timeout=20):
        rogue = Rogue(transport.endpoint)
        try:
            await rogue.join()  # each wait for an answer is bounded at 20 s
            assert "rogue" in transport._peers.nodes
        finally:
            rogue.close()


async def test_a_send_waiting_on_a_peer_that_is_lost_fails_with_peer_lost() -> None:
    """A send queued behind a full link to a peer that reads nothing fails with PeerLost
    when the peer is declared lost (its link closes); before, the link's cancelled future
    surfaced as a CancelledError that looked like the caller's own cancellation."""
    transport = ZmqTransport(hwm=4, heartbeat_timeout=60.0)
    async with Runtime(transport, default_timeout=20):
        rogue = Rogue(transport.endpoint)
        try:
            await rogue.join()
            peers = transport._peers
            header = Header(Op.TELL, transport.node_id, None, "someone")
            big = b"z" * (1 << 20)
            waiting = None
            for _ in range(2_000):  # fill the socket and the kernel's buffers
                task = asyncio.ensure_future(peers.send("rogue", header, big, 60.0))
                await asyncio.sleep(0)
                if not task.done():
                    waiting = task
                    break
                task.result()
            assert waiting is not None, "the link never filled"
            peers.forget("rogue")  # what losing the peer does to its link
            with pytest.raises(PeerLost, match="was lost"):
                await asyncio.wait_for(waiting, 20)
        finally:
            rogue.close()
