"""Several node processes: MsgHub across three processes, moved actors, killed peers."""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any

import anyio
import pytest

from agentplex import ActorError, ActorNotFound, Msg, MsgHub, Runtime
from agentplex.bus import ZmqTransport
from agentplex.runtime import PeerLost
from tests.support.actors import Echo

pytestmark = pytest.mark.anyio


def head() -> Runtime:
    return Runtime(ZmqTransport(heartbeat_interval=0.2, heartbeat_timeout=1.5),
                   default_timeout=20)


async def test_msghub_across_three_processes(nodes: Any) -> None:
    async with head() as rt:
        ep = rt.transport.endpoint  # type: ignore[attr-defined]
        for name in ("alice", "bob", "carol"):
            await nodes(ep, f"Talker:{name}")
        refs = [rt.ref(n) for n in ("alice", "bob", "carol")]
        async with MsgHub(refs, announcement=Msg("host", "welcome", "user")):
            for ref in refs:
                await ref.call(Msg("host", "speak", "user"))
        memory = {r.name: (await r.call(Msg("host", "memory", "user"))).content for r in refs}
    assert memory == {
        "alice": "host:welcome|bob:bob spoke after 2|carol:carol spoke after 3",
        "bob": "host:welcome|alice:alice spoke after 1|carol:carol spoke after 3",
        "carol": "host:welcome|alice:alice spoke after 1|bob:bob spoke after 2",
    }


async def test_moved_actor_is_found_again(nodes: Any) -> None:
    async with head() as rt:
        ep = rt.transport.endpoint  # type: ignore[attr-defined]
        await nodes(ep, "Echo:mover:A", node_id="node-a")
        await nodes(ep, "Echo:other:B", node_id="node-b")
        mover = rt.ref("mover")
        assert await mover.call("where") == "A"
        assert await mover.call("leave") == "bye"
        with anyio.fail_after(20):  # hang guard only
            while True:
                try:
                    await mover.call("where")
                except ActorNotFound:
                    break
        # respawned elsewhere (remote spawn by import path); the stale cache is corrected
        transport: ZmqTransport = rt.transport  # type: ignore[assignment]
        transport._calls.names["mover"] = "node-a"  # as a peer that cached the old home would
        await transport.spawn("node-b", "tests.support.actors:Echo", "B", name="mover")
        transport._calls.names["mover"] = "node-a"
        assert await mover.call("where") == "B"
        transport._calls.names["mover"] = "node-a"  # a tell, too, finds the new home
        await mover.tell("late news")
        for _ in range(400):  # at most 20 s
            if "late news" in await mover.call("told"):
                break
            await anyio.sleep(0.05)
        assert "late news" in await mover.call("told")


async def test_kill_9_fails_waiting_calls_with_peer_lost(nodes: Any) -> None:
    async with head() as rt:
        ep = rt.transport.endpoint  # type: ignore[attr-defined]
        victim = await nodes(ep, "Echo:victim")
        await nodes(ep, "Echo:survivor")
        errors: list[BaseException] = []

        async def wait_on(coro: Any) -> None:
            try:
                await coro
            except ActorError as exc:
                errors.append(exc)

        async def read_stream() -> None:
            async for _ in rt.ref("victim").stream(10**6, timeout=30):
                pass

        with anyio.fail_after(25):  # hang guard; the calls' own timeout is 30 s
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_on, rt.ref("victim").call("hang", timeout=30))
                tg.start_soon(wait_on, rt.ref("victim").call({"sleep": 60}, timeout=30))
                tg.start_soon(wait_on, read_stream())
                await anyio.sleep(0.5)
                os.kill(victim.proc.pid, signal.SIGKILL)
        assert len(errors) == 3
        assert all(isinstance(e, PeerLost) for e in errors), errors
        assert await rt.ref("survivor").call("alive?") == "alive?"
        with pytest.raises((ActorNotFound, PeerLost)):
            await rt.ref("victim").call("hi", timeout=10)


async def test_restarted_node_is_reached_again(nodes: Any) -> None:
    async with head() as rt:
        ep = rt.transport.endpoint  # type: ignore[attr-defined]
        first = await nodes(ep, "Echo:phoenix:first", node_id="node-r")
        assert await rt.ref("phoenix").call("where") == "first"
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
        with pytest.raises((PeerLost, ActorNotFound)):
            await rt.ref("phoenix").call("where", timeout=10)
        await nodes(ep, "Echo:phoenix:second", node_id="node-r")
        assert await rt.ref("phoenix").call("where") == "second"


async def test_nodes_rejoin_a_restarted_head(nodes: Any) -> None:
    with socket.socket() as s:  # a free port for both lives of the head
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    async with Runtime(ZmqTransport(endpoint, heartbeat_interval=0.2, heartbeat_timeout=1.5),
                       default_timeout=20) as rt:
        await nodes(endpoint, "Echo:steady")
        assert await rt.ref("steady").call("one") == "one"
    async with Runtime(ZmqTransport(endpoint, heartbeat_interval=0.2, heartbeat_timeout=1.5),
                       default_timeout=20) as rt:
        with anyio.fail_after(30):  # hang guard: the node re-registers after its heartbeat
            while True:
                try:
                    assert await rt.ref("steady").call("two") == "two"
                    break
                except ActorNotFound:
                    await anyio.sleep(0.2)


_CALLER = """
import asyncio, sys
from agentplex import Runtime
from agentplex.bus import ZmqTransport

async def main() -> None:
    t = ZmqTransport(head=sys.argv[1], heartbeat_interval=0.2, heartbeat_timeout=1.5)
    async with Runtime(t, default_timeout=3600) as rt:
        print("calling", flush=True)
        await rt.ref("host-echo").call("hang")

asyncio.run(main())
"""


async def test_handler_of_a_killed_caller_is_interrupted() -> None:
    async with head() as rt:
        await rt.spawn(Echo(), "host-echo")
        caller = await anyio.open_process(
            [sys.executable, "-c", _CALLER, rt.transport.endpoint])  # type: ignore[attr-defined]
        try:
            assert caller.stdout is not None
            with anyio.fail_after(30):
                assert b"calling" in await caller.stdout.receive()
                for _ in range(600):  # until the call is being handled here
                    if rt.transport._serving:  # type: ignore[attr-defined]
                        break
                    await anyio.sleep(0.05)
        finally:
            caller.kill()
            await caller.wait()
        # the mailbox is free again once the dead caller's handler was interrupted
        assert await rt.ref("host-echo").call("next", timeout=20) == "next"


_TELLER = """
import asyncio, sys
from agentplex import Runtime
from agentplex.bus import ZmqTransport

async def main() -> None:
    t = ZmqTransport(head=sys.argv[1], heartbeat_interval=0.2, heartbeat_timeout=1.5)
    async with Runtime(t, default_timeout=30) as rt:
        sink = rt.ref("sink")
        for i in range(int(sys.argv[2])):
            await sink.tell(i)
    print("left", flush=True)

asyncio.run(main())
"""


async def test_a_node_that_leaves_cleanly_loses_no_tell(nodes: Any) -> None:
    """Tells a node accepted reach an actor on a third node although the sender leaves
    (and the head announces its departure) right after the last one."""
    async with head() as rt:
        await nodes(rt.transport.endpoint, "Echo:sink")  # type: ignore[attr-defined]
        with anyio.fail_after(60):
            result = await anyio.run_process(
                [sys.executable, "-c", _TELLER, rt.transport.endpoint, "1000"])  # type: ignore[attr-defined]
            assert b"left" in result.stdout
            told = await rt.ref("sink").call("told")
    assert told == list(range(1000))



@pytest.mark.parametrize("news_first", [False, True])
async def test_a_node_that_leaves_says_so(nodes: Any, caplog: pytest.LogCaptureFixture,
                                          news_first: bool) -> None:
    """A node that closes says goodbye to every peer it spoke to, not only to the head:
    past their heartbeat timeout, none of them reports it lost — also when the head's news
    that it left reaches a peer before the goodbye does (``news_first``)."""
    async with head() as rt:
        endpoint = rt.transport.endpoint  # type: ignore[attr-defined]
        leaving = await nodes(endpoint, "Echo:leaving")
        transport = ZmqTransport(head=endpoint, heartbeat_interval=0.2, heartbeat_timeout=1.5)
        peer = Runtime(transport, default_timeout=20)
        async with peer:
            assert await peer.ref("leaving").call("hi") == "hi"  # the peer links to it
            if news_first:  # as the head's snapshot without the node would
                node = transport._calls.names["leaving"]
                transport._peers.nodes = {n: i for n, i in transport._peers.nodes.items()
                                          if n != node}
            await anyio.to_thread.run_sync(leaving.stop)
            assert leaving.proc.returncode == 0
            await anyio.sleep(3)  # past the peer's 1.5 s heartbeat timeout
            assert peer.transport.stats["peers_lost"] == 0  # type: ignore[attr-defined]
            with pytest.raises(ActorNotFound):
                await peer.ref("leaving").call("hi", timeout=5)
        assert rt.transport.stats["peers_lost"] == 0  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if "is lost" in r.getMessage()]


async def test_a_node_the_head_drops_fails_the_calls_other_nodes_wait_on(nodes: Any) -> None:
    """What launched a node says it died (the cluster's pings, Ray) before the bus's own
    heartbeat would: the head drops it and tells every node, and a call another node waits
    on fails at once with ``PeerLost``, not after that node's heartbeat timeout (30 s
    here), nor does any later call go there."""
    async with head() as rt:
        ep = rt.transport.endpoint  # type: ignore[attr-defined]
        victim = await nodes(ep, "Echo:victim", node_id="node-v")
        caller = Runtime(ZmqTransport(head=ep, heartbeat_interval=0.2, heartbeat_timeout=30),
                         default_timeout=60)
        async with caller:
            assert await caller.ref("victim").call("where") == ""
            os.kill(victim.proc.pid, signal.SIGSTOP)  # silent, not gone: no socket closes
            try:
                waiting = caller.ref("victim").call("hang", timeout=60)
                with anyio.fail_after(10):  # hang guard: the caller alone would wait 30 s
                    async with anyio.create_task_group() as tg:
                        failed: list[BaseException] = []

                        async def wait() -> None:
                            try:
                                await waiting
                            except ActorError as exc:
                                failed.append(exc)

                        tg.start_soon(wait)
                        await anyio.sleep(0.5)
                        rt.transport.peer_died(  # type: ignore[attr-defined]
                            "node-v", "its process died (so says what launched it)")
                assert len(failed) == 1 and isinstance(failed[0], PeerLost), failed
                assert "node-v" in str(failed[0])
                with anyio.fail_after(10), pytest.raises((ActorNotFound, PeerLost)):
                    await caller.ref("victim").call("where", timeout=5)
            finally:
                os.kill(victim.proc.pid, signal.SIGKILL)
