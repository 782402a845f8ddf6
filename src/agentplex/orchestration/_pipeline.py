"""Pipelines: run agents one after another, or all at once on copies of one input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Sequence
from typing import Any

from ..agent import AgentBase
from ..message import Msg
from ..runtime import ActorRef, get_runtime
from ..runtime.lowlevel import current_cell
from ..tracing.lowlevel import transcribe

__all__ = [
    "FanoutPipeline",
    "SequentialPipeline",
    "fanout_pipeline",
    "sequential_pipeline",
    "stream_printing_messages",
]

AgentLike = Callable[..., Awaitable[Any]]
"""An agent or an ``ActorRef``: anything awaited with a message that returns a reply."""


def _copy(msg: Msg | list[Msg] | None) -> Msg | list[Msg] | None:
    if msg is None:
        return None
    if isinstance(msg, list):
        return [m.model_copy(deep=True) for m in msg]
    return msg.model_copy(deep=True)


async def sequential_pipeline(
    agents: Sequence[AgentLike], msg: Msg | list[Msg] | None = None
) -> Any:
    """Pass ``msg`` to the first agent, its reply to the second, and so on; return the last
    reply."""
    for agent in agents:
        msg = await agent(msg)
    return msg


async def fanout_pipeline(
    agents: Sequence[AgentLike],
    msg: Msg | list[Msg] | None = None,
    enable_gather: bool = True,
    **kwargs: Any,
) -> list[Any]:
    """Give every agent its own copy of ``msg``; return their replies in agent order.

    With ``enable_gather`` (default) the agents run concurrently, otherwise one by one.
    Extra keyword arguments are passed to each agent.

    Concurrently, agents and refs are called with :meth:`Runtime.call_many` (idle local
    agents reply without a task each; agents elsewhere are reached in one batch), which
    returns once every agent has answered and then raises the first error in agent order.
    Other callables (or keyword arguments, or agents with different timeouts) are
    gathered with :func:`asyncio.gather`.
    """
    if not enable_gather:
        return [await a(_copy(msg), **kwargs) for a in agents]
    mailboxes = None if kwargs else await _mailboxes(agents)
    if mailboxes is None:
        return list(await asyncio.gather(*(a(_copy(msg), **kwargs) for a in agents)))
    refs, timeout = mailboxes
    if current_cell.get() is None:  # from the program driving the agents
        transcribe(msg, None)
    return await get_runtime().call_many(refs, msg, timeout=timeout, copy_message=True)


async def _mailboxes(agents: Sequence[AgentLike]) -> tuple[list[ActorRef], float | None] | None:
    """The refs through which ``agent(msg)`` would go for every agent, and their common
    timeout; ``None`` when some agent is called otherwise."""
    refs: list[ActorRef] = []
    timeouts: set[float | None] = set()
    await AgentBase.ensure_spawned_many(  # those called through their mailbox, at once
        a for a in agents if isinstance(a, AgentBase) and type(a).__call__ is AgentBase.__call__)
    for agent in agents:
        if isinstance(agent, ActorRef):
            refs.append(agent)
            timeouts.add(None)
        elif isinstance(agent, AgentBase) and type(agent).__call__ is AgentBase.__call__:
            refs.append(agent.ref if agent.spawned else await agent.ensure_spawned())
            timeouts.add(agent.timeout)
        else:
            return None
        if len(timeouts) > 1:
            return None
    return refs, next(iter(timeouts), None)


class SequentialPipeline:
    """A reusable :func:`sequential_pipeline` over fixed agents."""

    def __init__(self, agents: Sequence[AgentLike]) -> None:
        self.agents = list(agents)

    async def __call__(self, msg: Msg | list[Msg] | None = None) -> Any:
        return await sequential_pipeline(self.agents, msg)


class FanoutPipeline:
    """A reusable :func:`fanout_pipeline` over fixed agents."""

    def __init__(self, agents: Sequence[AgentLike], enable_gather: bool = True) -> None:
        self.agents = list(agents)
        self.enable_gather = enable_gather

    async def __call__(self, msg: Msg | list[Msg] | None = None, **kwargs: Any) -> list[Any]:
        return await fanout_pipeline(self.agents, msg, self.enable_gather, **kwargs)


async def stream_printing_messages(
    agents: Sequence[AgentBase],
    coroutine_task: Coroutine[Any, Any, Any],
    *,
    queue_size: int = 1024,
) -> AsyncGenerator[tuple[Msg, bool], None]:
    """Run ``coroutine_task`` and yield every ``(msg, last)`` the ``agents`` print meanwhile.

    For front ends: printed messages arrive as they are made, including streamed chunks
    (same ``msg.id``, ``last=False`` until the final one). The task's exception, if any, is
    raised after the messages printed before it.
    """
    queue: asyncio.Queue[tuple[Msg, bool]] = asyncio.Queue(maxsize=queue_size)
    for agent in agents:
        agent.set_msg_queue(queue)
    task = asyncio.ensure_future(coroutine_task)
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield getter.result()
                continue
            getter.cancel()
            while not queue.empty():
                yield queue.get_nowait()
            break
        task.result()
    finally:
        if not task.done():
            task.cancel()
        for agent in agents:
            agent.set_msg_queue(None)
