"""call / tell / stream / publish / errors between the test process and node processes."""

from __future__ import annotations

from typing import Any

import pytest

import agentplex
from agentplex import ActorNotFound, CallTimeout, HandlerError, MailboxFull, Runtime
from agentplex.bus import ZmqTransport

pytestmark = pytest.mark.anyio


def head() -> Runtime:
    return Runtime(ZmqTransport(heartbeat_interval=0.2, heartbeat_timeout=1.5),
                   default_timeout=20)


async def test_call_tell_stream_publish_across_processes(nodes: Any) -> None:
    async with head() as rt:
        endpoint = rt.transport.endpoint  # type: ignore[attr-defined]
        await nodes(endpoint, "Echo:echo")
        echo = rt.ref("echo")
        assert await echo.call({"x": [1, 2.5, "z", None]}) == {"x": [1, 2.5, "z", None]}
        await echo.tell("t1")
        await echo.tell("t2")
        assert await echo.call("told") == ["t1", "t2"]
        assert [x async for x in echo.stream(5)] == [f"chunk-{i}" for i in range(5)]
        # a stream longer than the credit window, read slowly
        items = []
        async for item in echo.stream(200, timeout=10):
            items.append(item)
        assert items == [f"chunk-{i}" for i in range(200)]
        await rt.subscribe("news", "echo")
        await rt.publish("news", "extra!")
        assert await echo.call("told") == ["t1", "t2", "extra!"]


async def test_errors_cross_typed(nodes: Any) -> None:
    async with head() as rt:
        await nodes(rt.transport.endpoint, "Echo:echo")  # type: ignore[attr-defined]
        echo = rt.ref("echo")
        with pytest.raises(HandlerError) as info:
            await echo.call("boom")
        assert info.value.exc_type == "ValueError"
        assert "boom requested" in info.value.remote_traceback
        with pytest.raises(HandlerError) as info:
            async for _ in echo.stream(0):
                pass
        assert info.value.exc_type == "RuntimeError"
        with pytest.raises(ActorNotFound):
            await rt.ref("nobody").call("hi")
        assert await echo.call("still here") == "still here"


async def test_tells_to_a_full_remote_mailbox_wait_then_fail(nodes: Any) -> None:
    t = ZmqTransport(tell_window=4)
    async with Runtime(t, default_timeout=20) as rt:
        await nodes(t.endpoint, "Echo:slow", env={"MAILBOX": "2"})
        slow = rt.ref("slow")
        await slow.tell({"sleep": 30})  # occupies the actor
        sent = 0
        with pytest.raises(MailboxFull):
            for _ in range(20):
                await slow.tell(sent, timeout=1)
                sent += 1
        # 2 in the mailbox, at most tell_window held back unacknowledged at the node
        assert 2 <= sent <= 2 + 4


async def test_connect_helper_runs_unchanged_agent_code(nodes: Any) -> None:
    async with agentplex.connect(heartbeat_timeout=5) as head_rt:
        ep = head_rt.transport.endpoint  # type: ignore[attr-defined]
        await nodes(ep, "Talker:remote-agent")
        async with agentplex.connect(ep) as rt:
            reply = await rt.ref("remote-agent").call(agentplex.Msg("me", "hi", "user"))
            assert reply.content == "remote-agent spoke after 0"


async def test_timeouts_and_early_exits_stop_remote_handlers(nodes: Any) -> None:
    async with head() as rt:
        await nodes(rt.transport.endpoint, "Echo:echo")  # type: ignore[attr-defined]
        echo = rt.ref("echo")
        with pytest.raises(CallTimeout):
            await echo.call("hang", timeout=0.5)
        # the hanging handler was interrupted, so the actor answers the next call
        assert await echo.call("next", timeout=10) == "next"
        taken = []
        async with echo.stream(10**6, timeout=10) as stream:
            async for item in stream:
                taken.append(item)
                if len(taken) == 3:
                    break
        assert taken == ["chunk-0", "chunk-1", "chunk-2"]
        # leaving the stream stopped its producer (otherwise it would wait for credit forever)
        assert await echo.call("after", timeout=10) == "after"
