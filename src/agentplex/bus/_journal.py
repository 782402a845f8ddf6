"""Run journals over the bus: what node processes did for an experiment another process
runs (messages, model responses, counts, spans) travels to that process, which alone
writes the run folder — no shared file system needed.

A node sends its journal (a JOURNAL frame, ``[locator, lines]``) to a caller just before
the answer, on the same link, so it arrives first; to the process that last sent it a
message of the run once enough waits; and to whoever asks (a JOURNAL request: the run's
process asks every node when the run ends, or when its transport closes first). A node
whose transport closes sends what it holds to that last process. A process that follows
the run too passes what it receives on with its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from ..message import encode
from ..tracing import active_run
from ..tracing.lowlevel import RUN_HEADER, RunPart, driving_run
from ._frames import Header, Op
from ._peers import Peers

if TYPE_CHECKING:
    from ..tracing import Run
    from ._calls import Calls

__all__ = ["Journals"]

log = logging.getLogger("agentplex.bus")

MAX_DRAINS = 10_000
"""Requests a drain makes to one node at most (each brings what the node held)."""


class Journals:
    """This process's side of run journals (see the module docstring)."""

    def __init__(self, peers: Peers, calls: Calls, *, rpc_timeout: float,
                 stats: Counter[str]) -> None:
        self.peers = peers
        self.calls = calls
        self.rpc_timeout = rpc_timeout
        self.stats = stats
        self.upstream: str | None = None
        """The node that last sent this one a message of a run (where journals go on)."""

    def heard(self, h: Header) -> None:
        """A request arrived: if it belongs to a run, that run's journal goes on to its
        sender from now on."""
        if h.trace is not None and RUN_HEADER in h.trace:
            self.upstream = h.src

    def _send(self, node: str, locator: str, text: str) -> None:
        self.stats["journal_frames"] += 1
        self.peers.send_nowait(node, Header(Op.JOURNAL, self.peers.node_id),
                               encode([locator, text]))

    def before_answer(self, h: Header) -> None:
        """The answer to request ``h`` is about to leave: what this process journaled goes
        first, when ``h`` came from the run (others, such as the head's checks on a node,
        know nothing of it)."""
        part = _part()
        if part is None or h.trace is None or h.trace.get(RUN_HEADER) != part.locator:
            return
        text = part.take()
        if text is not None:
            self._send(h.src, part.locator, text)

    def ship_upstream(self, text: str) -> None:
        """Send ``text`` (this process's journal) to the node the run came from last."""
        part = _part()
        if part is None or self.upstream is None or self.upstream not in self.peers.nodes:
            if part is not None:
                part.take_in(text)  # kept for the next answer or the run's drain
            return
        self._send(self.upstream, part.locator, text)

    def on_journal(self, h: Header, data: bytes) -> None:
        """A journal pushed to us, or (with a correlation id) a request for ours."""
        body = self.peers.decode(h, data)
        if h.corr is not None:  # the run's process asks: answer with what waits here
            part = _part()
            locator = body if isinstance(body, str) else None
            text = part.take() if part is not None and part.locator == locator else None
            self.peers.answer(h, Op.RESULT, encode(text or ""))
            return
        if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], str)
                and isinstance(body[1], str)):
            self.peers.drop("malformed journal")
            return
        run = driving_run() or _part()
        if run is None or run.locator != body[0]:
            self.stats["journal_dropped"] += 1  # a run this process is not (or no longer) in
            log.debug("dropped a journal of a run this process is not in")
            return
        run.take_in(body[1])

    async def drain(self, run: Run) -> None:
        """Collect what every other node still holds of ``run`` (before its folder is
        written); the run learns this process's id on the bus (its driver's)."""
        if run.driver_node is None:
            run.driver_node = self.peers.node_id
        nodes = [n for n in self.peers.nodes if n != self.peers.node_id]
        results = await asyncio.gather(*(self._drain_one(n, run) for n in nodes),
                                       return_exceptions=True)
        for node, result in zip(nodes, results, strict=True):
            if isinstance(result, BaseException):
                self.stats["journal_drain_failed"] += 1
                log.warning("could not collect the run journal of node %r: %s", node, result)

    async def _drain_one(self, node: str, run: Run) -> None:
        for _ in range(MAX_DRAINS):
            got: Any = await self.calls.request(node, Op.JOURNAL, encode(run.locator),
                                                self.rpc_timeout)
            if not isinstance(got, str) or not got:
                return
            run.take_in(got)

    async def closing(self) -> None:
        """This transport closes: a run's process collects what the nodes hold; a node
        sends what it holds to where the run came from."""
        run = driving_run()
        if run is not None:
            await self.drain(run)
            return
        part = _part()
        if part is not None and self.upstream is not None:
            text = part.take()
            if text is not None and self.upstream in self.peers.nodes:
                self._send(self.upstream, part.locator, text)


def _part() -> RunPart | None:
    """The run this process follows, if any."""
    run = active_run()
    return run if isinstance(run, RunPart) else None
