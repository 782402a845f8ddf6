"""call / tell / stream / publish / errors between the test process and node processes."""

from __future__ import annotations

from typing import Any

import pytest

from agentplex import ActorNotFound, HandlerError, Runtime
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
