"""Two runtimes joined by an in-process network reach each other's actors by name."""

from typing import Any

import pytest

from agentplex.runtime import (
    Actor,
    ActorNotFound,
    HandlerError,
    InProcessNetwork,
    InProcessTransport,
    Runtime,
)

pytestmark = pytest.mark.anyio


class Doubler(Actor):
    def __init__(self) -> None:
        self.published: list[Any] = []

    async def handle_call(self, message: Any) -> Any:
        if message is None:
            raise LookupError("nothing to double")
        return message * 2

    async def handle_publish(self, topic: str, message: Any) -> None:
        self.published.append(message)


async def test_calls_and_topics_cross_runtimes() -> None:
    net = InProcessNetwork()
    async with Runtime(InProcessTransport(net)) as a, Runtime(InProcessTransport(net)) as b:
        remote = Doubler()
        await b.spawn(remote, "doubler")
        assert await a.ref("doubler").call(21, timeout=5) == 42
        with pytest.raises(HandlerError, match="nothing to double"):
            await a.ref("doubler").call(None, timeout=5)
        await a.subscribe("t", "doubler")
        await a.publish("t", "hello")
        await b.idle()
        assert remote.published == ["hello"]
        with pytest.raises(ActorNotFound):
            await a.ref("nobody").call(1, timeout=5)
