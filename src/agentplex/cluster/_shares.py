"""A batch's shares: many actors of one class placed, started, checkpointed and restarted
together, as the head records them and as each node starts its share.

A :class:`BatchSpec` is what the head keeps for one ``spawn_many``: the class, the names
(a :class:`~agentplex.runtime.NameRange` or a list), each actor's arguments, and its
:class:`Share` on each node (a contiguous run of the batch's positions under one
placement). A node receives its part as one request (:func:`share_request`).
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..runtime import NameRange, Runtime
from ..runtime.lowlevel import GCPause
from ._build import build_actor
from ._options import BatchOptions
from ._scheduler import Placement

__all__ = ["BatchSpec", "NodeShares", "Share", "batch_args", "batch_names",
           "names_from_wire", "names_to_wire", "position_runs", "share_request"]


@dataclass
class Share:
    """Positions ``start <= i < stop`` of a batch, placed by ``placement``."""

    placement: Placement
    start: int
    stop: int


@dataclass
class BatchSpec:
    """How to (re)create a batch of actors anywhere, and where its parts run."""

    id: int
    target: str
    names: Sequence[str]
    args: list[list[Any]] | None = None
    """Positional arguments per actor (``None``: none for any)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: BatchOptions = field(default_factory=BatchOptions)
    restarts: int = 0
    shares: list[Share] = field(default_factory=list)
    states: dict[int, Any] = field(default_factory=dict)
    """The last checkpoint of each position's ``state_dict()``."""
    checkpoints: int = 0
    """Checkpoints taken of this batch (the last one's number)."""
    checkpointed_at: str | None = None
    """When the last checkpoint was taken (UTC, ISO 8601)."""
    stopped: set[int] = field(default_factory=set)
    lost: list[tuple[int, int]] = field(default_factory=list)
    """Position ranges that died with their node and were not restarted."""

    def __len__(self) -> int:
        return len(self.names)

    def share_of(self, i: int) -> Share | None:
        """The share holding position ``i`` (shares are kept sorted by ``start``)."""
        k = bisect.bisect_right(self.shares, i, key=lambda s: s.start) - 1
        if k >= 0 and self.shares[k].start <= i < self.shares[k].stop:
            return self.shares[k]
        return None

    def is_lost(self, i: int) -> bool:
        return any(a <= i < b for a, b in self.lost)

    def live_count(self, node_id: str) -> int:
        """Actors of this batch on ``node_id``."""
        return sum(s.stop - s.start for s in self.shares if s.placement.node_id == node_id
                   ) - sum(1 for i in self.stopped
                           if (s := self.share_of(i)) and s.placement.node_id == node_id)


def batch_args(args: Sequence[Sequence[Any]] | int) -> tuple[list[list[Any]] | None, int]:
    """``spawn_many``'s ``args``, read the same way by every cluster: each agent's
    positional arguments (``None`` for a bare count) and how many agents (at least one)."""
    per_agent = None if isinstance(args, int) else [list(a) for a in args]
    count = args if isinstance(args, int) else len(args)
    if count < 1:
        raise ValueError("spawn_many needs at least one actor")
    return per_agent, count


def batch_names(names: str | Sequence[str] | None, count: int, default_prefix: str
                ) -> Sequence[str]:
    """The names of a batch: a prefix ``"player-"`` gives ``player-0`` … ``player-{n-1}``;
    a sequence is taken as is; ``None`` uses ``default_prefix``."""
    if names is None or isinstance(names, str):
        return NameRange(default_prefix if names is None else names, 0, count)
    if isinstance(names, NameRange):
        if len(names) != count:
            raise ValueError(f"{len(names)} names for {count} actors")
        return names
    listed = list(names)
    if len(listed) != count:
        raise ValueError(f"{len(listed)} names for {count} actors")
    if not all(isinstance(n, str) and n for n in listed):
        raise ValueError("names must be non-empty strings")
    if len(set(listed)) != len(listed):
        raise ValueError("a batch names one actor twice")
    return listed


def position_runs(positions: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted positions as ``(start, stop)`` runs."""
    out: list[tuple[int, int]] = []
    for i in positions:
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def names_to_wire(names: Sequence[str]) -> Any:
    """A range as ``{"range": [prefix, start, stop]}``, else the list of names."""
    if isinstance(names, NameRange):
        return {"range": names.to_wire()}
    return list(names)


def names_from_wire(data: Any) -> Sequence[str]:
    if isinstance(data, dict):
        prefix, start, stop = data["range"]
        return NameRange(prefix, start, stop)
    if not isinstance(data, list) or not all(isinstance(n, str) for n in data):
        raise ValueError("malformed batch names")
    return data


def share_request(batch: BatchSpec, shares: Sequence[Share], *, states: bool = True
                  ) -> dict[str, Any]:
    """The one request a node gets for its ``shares`` of ``batch`` (msgpack-able; the
    arguments and, unless not ``states``, the checkpoints of each position ride along,
    packed as lists)."""
    segments = []
    for s in shares:
        positions = [i for i in range(s.start, s.stop) if i not in batch.stopped] if (
            batch.stopped) else None
        if positions is not None and len(positions) != s.stop - s.start:
            parts = [[i] for i in positions]  # rare: some were stopped; go one by one
        else:
            parts = [[s.start, s.stop]]
        for part in parts:
            a, b = (part[0], part[0] + 1) if len(part) == 1 else (part[0], part[1])
            segments.append({
                "index": a,
                "names": names_to_wire(batch.names[a:b]),
                "args": batch.args[a:b] if batch.args is not None else None,
                "states": ([batch.states.get(i) for i in range(a, b)]
                           if batch.states and states else None),
                "placement": {"id": s.placement.id, "node_id": s.placement.node_id,
                              "gpu_indices": list(s.placement.gpu_indices)},
            })
    return {"op": "start_many", "batch": batch.id, "target": batch.target,
            "kwargs": batch.kwargs, "options": batch.options.model_dump(),
            "segments": segments}


class NodeShares:
    """A node's side of batches: starts its share of a batch from one request (one
    :meth:`Runtime.spawn_many` per segment, all or nothing), and knows which positions
    of which batch it hosts (for checkpoints and stops)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.batches: dict[int, list[tuple[int, Sequence[str]]]] = {}
        self.requests = 0
        """``start_many`` requests received (one per batch, or per restart, per node)."""

    async def start(self, request: dict[str, Any], cls: type[Any]) -> int:
        """Create and start every actor of ``request`` (see :func:`share_request`),
        each by :func:`~._build.build_actor` (its name passed as ``name=`` when its
        constructor takes one); returns how many."""
        self.requests += 1
        kwargs = request.get("kwargs") or {}
        options = BatchOptions.model_validate(request.get("options") or {})
        started: list[tuple[int, Sequence[str]]] = []
        pause = GCPause()  # a batch allocates only live objects: no point scanning them now
        pause.hold()
        try:
            for seg in request["segments"]:
                names = names_from_wire(seg["names"])
                args, states = seg.get("args"), seg.get("states")
                p = seg["placement"]
                placement = Placement(p.get("id", 0), p["node_id"],
                                      tuple(p.get("gpu_indices", ())), options.resources,
                                      len(names))
                actors = []
                for i in range(len(names)):
                    actor = build_actor(cls, names[i], args[i] if args else (), kwargs,
                                        options, placement)
                    if states and states[i] is not None:
                        actor.load_state_dict(states[i])
                    actors.append(actor)
                    if i % 8192 == 8191:
                        await asyncio.sleep(0)  # let heartbeats and pings through
                await self.runtime.spawn_many(actors, names)
                started.append((seg.get("index", 0), names))
        except BaseException:
            for _, names in started:
                await self.runtime.stop_many(names, drain=False)
            raise
        finally:
            pause.end()
        self.batches.setdefault(request["batch"], []).extend(started)
        return sum(len(n) for _, n in started)

    async def states(self, batch: int, timeout: float) -> list[list[Any]]:
        """``[[position, [state, ...]], ...]`` of the batch's actors here, each taken in
        its mailbox order."""
        runtime = self.runtime

        async def one(name: str) -> Any:
            return await runtime.state_of(name, timeout=timeout) if name in runtime else None

        out: list[list[Any]] = []
        for index, names in self.batches.get(batch, ()):
            got: list[Any] = []
            for i in range(0, len(names), 4096):
                got.extend(await asyncio.gather(*(one(n) for n in names[i:i + 4096])))
            out.append([index, got])
        return out

    async def stop(self, batch: int) -> None:
        """Stop every actor of ``batch`` here."""
        for _, names in self.batches.pop(batch, ()):
            await self.runtime.stop_many(names)
