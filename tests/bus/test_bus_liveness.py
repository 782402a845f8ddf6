"""Runs that lose nothing: a process whose event loop is busy or blocked for longer than the
heartbeat timeout is not declared lost (its heartbeats come from a thread of their own),
and a node that does not know a sender tells it so at once instead of dropping its frames."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import anyio
import pytest
import zmq
import zmq.asyncio

from agentplex import Runtime
from agentplex.bus import UnknownPeer, ZmqTransport
from agentplex.bus.lowlevel import Header, Op, error_from_wire, split_frames, to_frames
from agentplex.message import decode, encode
from agentplex.runtime import PerActor

pytestmark = pytest.mark.anyio

_BUSY_DRIVER = """
import asyncio, json, sys, time
from agentplex import Runtime
from agentplex.bus import ZmqTransport
from agentplex.runtime import PerActor

async def main() -> None:
    t = ZmqTransport(head=sys.argv[1], heartbeat_interval=0.2, heartbeat_timeout=1.5)
    async with Runtime(t, default_timeout=20) as rt:
        names = ["e1", "e2"]
        assert await rt.call_many(names, "before") == ["before", "before"]
        end = time.monotonic() + 4  # a synchronous stretch, past everyone's 1.5 s timeout
        while time.monotonic() < end:
            sum(range(1000))
        out = {"call": await rt.ref("e1").call("after", timeout=20),
               "many": await rt.call_many(names, PerActor(["a1", "a2"]), timeout=20),
               "lost": t.stats["peers_lost"]}
        print(json.dumps(out), flush=True)

asyncio.run(main())
"""


def head(**kwargs: Any) -> Runtime:
    return Runtime(ZmqTransport(heartbeat_interval=0.2, heartbeat_timeout=1.5, **kwargs),
                   default_timeout=20)


async def test_a_driver_that_blocks_its_loop_is_not_lost_and_is_served_after(
        nodes: Any) -> None:
    async with head() as rt:
        ep = rt.transport.endpoint  # type: ignore[attr-defined]
        await nodes(ep, "Echo:e1", "Echo:e2")
        with anyio.fail_after(90):
            result = await anyio.run_process([sys.executable, "-c", _BUSY_DRIVER, ep],
                                             check=False)
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        out = json.loads(result.stdout.decode().strip().splitlines()[-1])
        assert out == {"call": "after", "many": ["a1", "a2"], "lost": 0}
        assert rt.transport.stats["peers_lost"] == 0  # type: ignore[attr-defined]


async def test_a_frame_from_an_unknown_node_gets_an_error_back(nodes: Any) -> None:
    async with head() as rt:
        node = await nodes(rt.transport.endpoint, "Echo:e1")  # type: ignore[attr-defined]
        ctx = zmq.asyncio.Context()
        try:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(node.endpoint)
            await sock.send_multipart(to_frames(Header(Op.CALL, "stranger", 7, "e1"),
                                                encode("hi")))
            await sock.send_multipart(to_frames(Header(Op.TELL, "stranger", None, "e1"),
                                                encode("hi")))
            with anyio.fail_after(20):
                answers = [split_frames(await sock.recv_multipart()) for _ in range(2)]
        finally:
            ctx.destroy(linger=0)
    for (h, data), corr, op in zip(answers, (7, None), (Op.CALL, Op.TELL), strict=True):
        assert (h.op, h.corr, h.target) == (Op.ERROR, corr, "e1")
        value = decode(data)
        assert value["op"] == op
        err = error_from_wire(value)
        assert isinstance(err, UnknownPeer) and "stranger" in str(err)


async def test_a_node_the_head_forgot_hears_of_it_and_joins_again(nodes: Any) -> None:
    """The head declares a live node lost (as it would one stopped for a while): another
    node then refuses that node's calls, which fail at once with ``UnknownPeer`` instead of
    timing out, and the forgotten node joins the head again and is served."""
    async with head() as rt:
        head_t: ZmqTransport = rt.transport  # type: ignore[assignment]
        await nodes(head_t.endpoint, "Echo:e1", "Echo:e2")
        # slow heartbeats: the forgotten node rejoins only after the refused call
        t = ZmqTransport(head=head_t.endpoint, heartbeat_interval=2, heartbeat_timeout=60)
        async with Runtime(t, default_timeout=20) as other:
            assert await other.ref("e1").call("before") == "before"
            head_t._peer_lost(t.node_id)  # what its silence would make the head do
            await head_t._head.push_state()  # every node has the news
            with anyio.fail_after(30):
                call = other.ref("e1").call("forgotten", timeout=60)
                many = other.call_many(["e1", "e2"], PerActor(["a", "b"]), timeout=60,
                                       return_exceptions=True)
                refused = await asyncio.gather(call, many, return_exceptions=True)
                assert isinstance(refused[0], UnknownPeer), refused
                assert "does not know" in str(refused[0])
                assert all(isinstance(e, UnknownPeer) for e in refused[1]), refused
                while True:  # it joins again once the head answers its ping
                    try:
                        assert await other.ref("e1").call("again", timeout=60) == "again"
                        break
                    except UnknownPeer:
                        await anyio.sleep(0.2)
            assert t.stats["unknown_to_peer"] >= 1
            assert t._head.joins >= 2


async def test_a_call_whose_node_is_lost_while_its_frame_waits_reports_one_error() -> None:
    """A call's frame waits to go (the peer's socket is full: a node that stopped reading)
    when the node is declared lost: the waiting call fails, and the send raises too. The
    caller gets that error; the waiter's own, which nobody awaits any more, must not show
    as "Future exception was never retrieved" (once for each of 10,000 agents in a
    checkpoint of a node killed at 100,000 agents)."""
    import gc
    from collections import Counter

    from agentplex.bus._calls import Calls
    from agentplex.runtime import PeerLost as Lost
    from agentplex.runtime.lowlevel import Envelope, Kind

    gate = asyncio.Event()

    class StuckPeers:  # the frame waits until the node is declared lost, then fails
        node_id = "caller"

        def try_send(self, node: str, header: Any, data: bytes) -> list[bytes]:
            return [data]

        async def send_frames(self, node: str, header: Any, frames: Any, timeout: float
                              ) -> None:
            await gate.wait()
            raise Lost(f"node {node!r} is lost")

    calls = Calls(StuckPeers(), None, None, stream_window=8,  # type: ignore[arg-type]
                  tell_window=8, rpc_timeout=5, stats=Counter())
    calls.names["victim"] = "node-v"
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    before = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(str(context["message"])))
    try:
        waiter: asyncio.Future[Any] = loop.create_future()
        sending = asyncio.ensure_future(calls.deliver(
            Envelope(Kind.CALL, "victim", "hi", waiter=waiter), 5))
        await asyncio.sleep(0.01)  # its frame waits
        calls.peer_lost("node-v", Lost("node 'node-v' stopped answering"))
        assert waiter.done()
        gate.set()
        with pytest.raises(Lost):
            await sending
        del waiter, sending
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(before)
    assert not [m for m in reported if "never retrieved" in m], reported
