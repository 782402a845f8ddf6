"""The :class:`Transport` interface and the in-process transport.

A runtime delivers envelopes for its own actors itself. Everything else — actors and topic
subscribers hosted by *other* runtimes — goes through its transport. The runtime never
knows which transport it has, and a transport knows the runtime only through the methods
below: this file is all a transport's author needs to read.

What the runtime calls on a transport: the methods of :class:`Transport`.

What a transport may call on the runtime (:class:`~agentplex.runtime.Runtime`), to serve
what arrives for it from elsewhere:

- ``runtime.accepts(name)``: whether a local actor ``name`` exists and takes messages;
  ``name in runtime`` whether it exists at all.
- ``runtime.offer_local(env)``: put an envelope in the mailbox of the local actor
  ``env.target`` without waiting; ``False`` when the mailbox is full. (An idle actor
  handles it in the runtime's feed, one task for all such envelopes, not a task each.)
- ``await runtime.deliver_local(env, timeout)``: the same, waiting for room.
- ``runtime.deliver_local_many(envs, timeout, copy_payloads=...)``: the calls of one
  fan-out, each to its local actor, without waiting (idle actors handle theirs in one
  batch); an envelope that cannot be delivered gets its error on its ``waiter``.
- ``await runtime.publish_local(env, timeout)``: deliver a topic message to the local
  subscribers of ``env.topic``.
- ``runtime.interrupt_local(env)``: the remote caller of ``env`` gave up; skip or cancel
  its handler.
- ``runtime.names()``, ``runtime.topics()``: the local actors, and the topics local actors
  subscribe to (to announce them again, e.g. after reconnecting).
- ``await runtime.spawn(actor, name)``, ``runtime.ref(name)``, ``runtime.default_timeout``:
  as for any user of the runtime.

Envelopes, their kinds and stream channels are in :mod:`agentplex.runtime.lowlevel`. An
envelope's ``waiter`` is where its answer goes in the process that holds it: the caller's
future or :class:`~agentplex.runtime.lowlevel.StreamChannel` on the sending side; on the
serving side, a stand-in the transport makes (anything with ``done()``, ``set_result()``,
``set_exception()`` and ``cancel()``, or a stream channel the transport reads from).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._envelope import Envelope
from ._errors import ActorError, ActorNotFound, ActorStopped
from ._settle import settle

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["InProcessNetwork", "InProcessTransport", "Transport"]


class Transport(ABC):
    """Carries envelopes between runtimes.

    Implementations: :class:`InProcessTransport` (runtimes sharing one event loop, no
    serialisation) and ``agentplex.bus.ZmqTransport`` (processes and machines).
    """

    @abstractmethod
    async def start(self, runtime: Runtime) -> None:
        """Attach ``runtime``: from now on, deliver envelopes for its actors to it."""

    @abstractmethod
    async def close(self) -> None:
        """Detach and release every resource; pending remote calls fail."""

    @abstractmethod
    async def deliver(self, env: Envelope, timeout: float) -> None:
        """Deliver ``env`` to ``env.target``, an actor hosted elsewhere.

        Raises :class:`ActorNotFound` when no runtime hosts it. Replies (for calls and
        streams) must resolve ``env.waiter`` in this process.
        """

    async def deliver_many(self, envs: Sequence[Envelope], timeout: float) -> None:
        """Deliver the calls of one fan-out (:meth:`Runtime.call_many`), each to an actor
        hosted elsewhere.

        An envelope that cannot be delivered gets its error on its ``waiter``; this
        method does not raise for it. The default delivers one by one with :meth:`deliver`;
        a transport that crosses processes groups the envelopes by the node hosting their
        target and sends one frame per node.
        """
        for env in envs:
            try:
                await self.deliver(env, timeout)
            except ActorError as exc:
                if env.waiter is not None and not env.waiter.done():
                    env.waiter.set_exception(exc)

    async def call_many(self, kind: str, names: Sequence[str], payload: Any, timeout: float,
                        *, sender: str | None = None, trace: Any = None, each: bool = False
                        ) -> tuple[list[Any], dict[int, BaseException]]:
        """Call every actor of ``names`` (hosted elsewhere) with ``payload`` (``kind``:
        ``Kind.CALL`` or ``Kind.CONTROL``), for :meth:`Runtime.call_many`; return once all
        have answered, failed or timed out. With ``each``, ``payload`` is a sequence as
        long as ``names``: ``names[i]`` gets ``payload[i]``.

        Returns ``(replies, errors)``: the reply of ``names[i]`` is ``replies[i]`` unless
        ``errors`` has an error at ``i`` (:class:`ActorNotFound`, :class:`CallTimeout` after
        ``timeout`` seconds, the handler's error ...). Calls still running at the timeout
        or when the caller is cancelled are interrupted. The default makes one envelope
        per call and hands them to :meth:`deliver_many`; a transport may do without them.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        envs: list[Envelope | None] = [
            Envelope(kind, name, payload[i] if each else payload, waiter=loop.create_future(),
                     sender=sender, trace=trace) for i, name in enumerate(names)]
        futs = [env.waiter for env in envs if env is not None]
        try:
            await self.deliver_many([env for env in envs if env is not None], timeout)
        except Exception as exc:  # becomes each undelivered call's error
            for fut in futs:
                if not fut.done():
                    fut.set_exception(exc)
        await settle(envs, deadline, timeout, self.cancel)
        errors: dict[int, BaseException] = {}
        replies: list[Any] = []
        for i, fut in enumerate(futs):
            err = ActorStopped("the handler was interrupted") if fut.cancelled() else (
                fut.exception())
            if err is not None:
                errors[i] = err
            replies.append(None if err is not None else fut.result())
        return replies, errors

    @abstractmethod
    async def publish(self, env: Envelope, timeout: float) -> None:
        """Deliver the topic message ``env`` to subscribers hosted elsewhere."""

    def cancel(self, env: Envelope) -> None:  # noqa: B027 - optional hook
        """The caller of ``env`` (delivered elsewhere) gave up: interrupt its handler."""

    async def registered(self, name: str) -> None:  # noqa: B027 - optional hook
        """The attached runtime now hosts actor ``name``."""

    async def unregistered(self, name: str) -> None:  # noqa: B027 - optional hook
        """The attached runtime no longer hosts actor ``name``."""

    async def registered_many(self, names: Sequence[str]) -> None:
        """The attached runtime now hosts every actor of ``names`` (a list, or a
        :class:`~agentplex.runtime.NameRange` a transport may announce as one entry).
        By default, :meth:`registered` for each."""
        for name in names:
            await self.registered(name)

    async def unregistered_many(self, names: Sequence[str]) -> None:
        """The attached runtime no longer hosts the actors of ``names``. By default,
        :meth:`unregistered` for each."""
        for name in names:
            await self.unregistered(name)

    async def subscribed(self, topic: str) -> None:  # noqa: B027 - optional hook
        """An actor of the attached runtime subscribed to ``topic``."""

    async def unsubscribed(self, topic: str) -> None:  # noqa: B027 - optional hook
        """No actor of the attached runtime subscribes to ``topic`` any more."""


class InProcessNetwork:
    """Runtimes on one event loop that can reach each other through in-process transports."""

    def __init__(self) -> None:
        self.runtimes: list[Runtime] = []

    def find(self, name: str) -> Runtime | None:
        """The runtime hosting actor ``name``, if any."""
        for runtime in self.runtimes:
            if name in runtime:
                return runtime
        return None


class InProcessTransport(Transport):
    """Joins runtimes running on one event loop; envelopes pass by reference.

    Runtimes whose transports share one :class:`InProcessNetwork` reach each other's actors
    by name, exactly as they would across processes::

        net = InProcessNetwork()
        a = Runtime(transport=InProcessTransport(net))
        b = Runtime(transport=InProcessTransport(net))

    Without a network each transport is alone, which is the embedded default.
    """

    def __init__(self, network: InProcessNetwork | None = None) -> None:
        self.network = network if network is not None else InProcessNetwork()
        self._runtime: Runtime | None = None

    async def start(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.network.runtimes.append(runtime)

    async def close(self) -> None:
        if self._runtime in self.network.runtimes:
            self.network.runtimes.remove(self._runtime)
        self._runtime = None

    async def deliver(self, env: Envelope, timeout: float) -> None:
        host = self.network.find(env.target)
        if host is None or host is self._runtime:
            raise ActorNotFound(f"no actor named {env.target!r}", actor=env.target)
        await host.deliver_local(env, timeout)

    async def publish(self, env: Envelope, timeout: float) -> None:
        for runtime in list(self.network.runtimes):
            if runtime is not self._runtime:
                await runtime.publish_local(env, timeout)

    def cancel(self, env: Envelope) -> None:
        host = self.network.find(env.target)
        if host is not None:
            host.interrupt_local(env)
