"""Placement: which node (and which GPUs) satisfy a resource request.

The scheduler keeps the capacity of every node and what is allocated on it. It places by
declared resources only, never over-commits a GPU (neither its share nor its memory), and
says exactly why a request does not fit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import Unschedulable
from ._resources import GPU, NodeSpec, Resources

__all__ = ["Placement", "PlacementPolicy", "Scheduler"]

PlacementPolicy = Literal["pack", "spread"]
_EPS = 1e-9


@dataclass(frozen=True)
class Placement:
    """Where an actor runs (or ``count`` actors of a batch run): its node, the GPUs it
    may see, and what each one holds."""

    id: int
    node_id: str
    gpu_indices: tuple[int, ...]
    resources: Resources
    count: int = 1

    def cuda_visible_devices(self) -> str:
        """The ``CUDA_VISIBLE_DEVICES`` value for the actor's worker process."""
        return ",".join(str(i) for i in self.gpu_indices)


def _settled(amount: float) -> float:
    """A share after a release: what rounding left of nothing is nothing (20 actors of 0.05
    CPU released one by one leave -1e-16 otherwise, shown as such by ``agentplex status``)."""
    return 0.0 if abs(amount) < _EPS else amount


@dataclass
class _GpuState:
    gpu: GPU
    share: float = 0.0
    memory: int = 0

    def fits(self, share: float, memory: int) -> bool:
        capacity = self.gpu.total_memory
        return self.share + share <= 1 + _EPS and self.memory + memory <= capacity


@dataclass
class _NodeState:
    spec: NodeSpec
    cpus: float = 0.0
    memory: int = 0
    gpus: list[_GpuState] = field(default_factory=list)

    def free_cpus(self) -> float:
        return self.spec.cpus - self.cpus

    def load(self) -> float:
        """A fraction of capacity in use (the most used of CPU, memory and GPU share)."""
        parts = [self.cpus / self.spec.cpus if self.spec.cpus else 0.0]
        if self.spec.memory:
            parts.append(self.memory / self.spec.memory)
        if self.gpus:
            parts.append(sum(g.share for g in self.gpus) / len(self.gpus))
        return max(parts)


class Scheduler:
    """Tracks nodes and allocations; :meth:`place` picks a node for a request.

    ``pack`` fills the most loaded node that fits (few nodes busy, others free for big
    requests); ``spread`` picks the least loaded (even load, isolation).
    """

    def __init__(self) -> None:
        self._nodes: dict[str, _NodeState] = {}
        self._placements: dict[int, Placement] = {}
        self._held: dict[int, int] = {}
        self._ids = itertools.count(1)

    # -- nodes ---------------------------------------------------------------------------

    def add_node(self, spec: NodeSpec) -> None:
        """Add (or replace the capacity of) a node."""
        old = self._nodes.get(spec.id)
        state = _NodeState(spec, gpus=[_GpuState(g) for g in spec.gpus])
        if old is not None:
            state.cpus, state.memory = old.cpus, old.memory
            for new, prev in zip(state.gpus, old.gpus, strict=False):
                new.share, new.memory = prev.share, prev.memory
        self._nodes[spec.id] = state

    def remove_node(self, node_id: str) -> list[Placement]:
        """Forget a node (it died); returns the placements that were on it."""
        self._nodes.pop(node_id, None)
        lost = [p for p in self._placements.values() if p.node_id == node_id]
        for p in lost:
            del self._placements[p.id]
            self._held.pop(p.id, None)
        return lost

    def nodes(self) -> list[NodeSpec]:
        return [n.spec for n in self._nodes.values()]

    def usage(self, node_id: str) -> dict[str, Any]:
        """CPUs, memory and per-GPU share and memory allocated on a node."""
        n = self._nodes[node_id]
        return {"cpus": n.cpus, "memory": n.memory,
                "gpus": [{"index": g.gpu.index, "share": g.share, "memory": g.memory}
                         for g in n.gpus]}

    def placements(self, node_id: str | None = None) -> list[Placement]:
        return [p for p in self._placements.values() if node_id is None or p.node_id == node_id]

    # -- placing -------------------------------------------------------------------------

    def place(
        self,
        request: Resources,
        *,
        policy: PlacementPolicy = "pack",
        labels: dict[str, str] | None = None,
        node_id: str | None = None,
    ) -> Placement:
        """Allocate ``request`` on a node and return the placement.

        ``labels`` must all match the node's labels; ``node_id`` pins the node. Raises
        :class:`Unschedulable` with the reason of every candidate when nothing fits.
        """
        if policy not in ("pack", "spread"):
            raise ValueError(f"unknown placement policy {policy!r} (use 'pack' or 'spread')")
        reasons: list[str] = []
        retryable = False
        candidates: list[tuple[_NodeState, list[int]]] = []
        for node in self._eligible(request, labels, node_id, reasons):
            retryable = True
            gpus, why_now = self._fit(node, request)
            if why_now:
                reasons.append(f"{node.spec.id}: {why_now}")
                continue
            candidates.append((node, gpus))
        if not candidates:
            if node_id is not None and node_id not in self._nodes:
                reasons.append(f"no node {node_id!r}")
            detail = "; ".join(reasons) or "no nodes"
            raise Unschedulable(f"cannot place {_describe(request)}: {detail}", retryable=retryable)
        loads = {id(n): n.load() for n, _ in candidates}
        if policy == "pack":
            node, gpus = max(candidates, key=lambda c: (loads[id(c[0])], c[0].spec.id))
        else:
            node, gpus = min(candidates, key=lambda c: (loads[id(c[0])], c[0].spec.id))
        return self._allocate(node, gpus, request)

    def release(self, placement: Placement, count: int | None = None) -> None:
        """Give back what ``placement`` held, or what ``count`` of its actors held (no-op
        if its node is gone)."""
        held = self._held.get(placement.id)
        if held is None:
            return
        n = held if count is None else max(0, min(count, held))
        if n == held:
            del self._placements[placement.id]
            del self._held[placement.id]
        else:
            self._held[placement.id] = held - n
        node = self._nodes.get(placement.node_id)
        if node is None or n == 0:
            return
        r = placement.resources
        node.cpus = _settled(node.cpus - r.cpus * n)
        node.memory -= r.memory * n
        share = min(r.gpus, 1.0)
        for index in placement.gpu_indices:
            g = next(g for g in node.gpus if g.gpu.index == index)
            g.share = _settled(g.share - share * n)
            g.memory -= r.gpu_memory * n

    def _allocate(self, node: _NodeState, gpus: list[int], r: Resources,
                  count: int = 1) -> Placement:
        node.cpus += r.cpus * count
        node.memory += r.memory * count
        share = min(r.gpus, 1.0)
        for i in gpus:
            node.gpus[i].share += share * count
            node.gpus[i].memory += r.gpu_memory * count
        placement = Placement(next(self._ids), node.spec.id,
                              tuple(node.gpus[i].gpu.index for i in gpus), r, count)
        self._placements[placement.id] = placement
        self._held[placement.id] = count
        return placement

    # -- batches -------------------------------------------------------------------------

    def place_many(
        self,
        request: Resources,
        count: int,
        *,
        policy: PlacementPolicy = "pack",
        labels: dict[str, str] | None = None,
        node_id: str | None = None,
    ) -> list[Placement]:
        """Allocate ``count`` copies of ``request`` at once; return their placements (one
        per node, or per node and GPU for GPU requests), whose ``count`` add up to ``count``.

        The cost is per node, not per actor: how many copies fit on each node is computed,
        then the batch is split — ``pack`` fills the most loaded nodes first, ``spread``
        levels the load (as placing them one by one on the least loaded node would). A
        batch that does not fit whole is refused whole (:class:`Unschedulable`, with each
        node's reason and how many fit there); nothing is allocated then.
        """
        if policy not in ("pack", "spread"):
            raise ValueError(f"unknown placement policy {policy!r} (use 'pack' or 'spread')")
        if count < 1:
            raise ValueError(f"a batch needs at least one actor, not {count}")
        reasons: list[str] = []
        fits: list[tuple[_NodeState, int]] = []
        ever_total = 0
        for node in self._eligible(request, labels, node_id, reasons):
            ever_total += self._capacity(_NodeState(node.spec, gpus=[
                _GpuState(g.gpu) for g in node.gpus]), request)
            n = self._capacity(node, request)
            if n <= 0:
                reasons.append(f"{node.spec.id}: {self._fit(node, request)[1] or 'full'}")
                continue
            if n < count:
                reasons.append(f"{node.spec.id}: {n} fit")
            fits.append((node, n))
        total = sum(n for _, n in fits)
        if total < count:
            if node_id is not None and node_id not in self._nodes:
                reasons.append(f"no node {node_id!r}")
            detail = "; ".join(reasons) or "no nodes"
            raise Unschedulable(
                f"cannot place {count} x {_describe(request)} (only {total} fit now): "
                f"{detail}", retryable=ever_total >= count)
        shares = (self._pack(fits, count) if policy == "pack"
                  else self._spread(fits, request, count))
        out: list[Placement] = []
        for node, k in shares:
            if k:
                out.extend(self._allocate_many(node, request, k))
        return out

    @staticmethod
    def _pack(fits: list[tuple[_NodeState, int]], count: int) -> list[tuple[_NodeState, int]]:
        """The most loaded nodes first, each filled as far as it goes."""
        order = sorted(fits, key=lambda f: (f[0].load(), f[0].spec.id), reverse=True)
        out = []
        for node, n in order:
            k = min(n, count)
            out.append((node, k))
            count -= k
            if not count:
                break
        return out

    @staticmethod
    def _spread(fits: list[tuple[_NodeState, int]], r: Resources,
                count: int) -> list[tuple[_NodeState, int]]:
        """Level the load: each node takes copies until its load reaches a common level
        (found by bisection over the level, so the cost is per node)."""
        loads = [n.load() for n, _ in fits]
        steps = [_step(n.spec, r) for n, _ in fits]
        if min(steps) <= 0:  # a request that loads nothing: an even split
            m = len(fits)
            ks = [min(cap, count // m) for _, cap in fits]
        else:
            lo, hi = min(loads), max(loads) + count * max(steps) + 1.0

            def taken(level: float) -> list[int]:
                return [min(cap, max(0, math.floor((level - load) / step + _EPS)))
                        for (_, cap), load, step in zip(fits, loads, steps, strict=True)]

            for _ in range(64):
                mid = (lo + hi) / 2
                if sum(taken(mid)) >= count:
                    hi = mid
                else:
                    lo = mid
            ks = taken(lo)
        left = count - sum(ks)
        while left > 0:  # the last few, one by one to the least loaded that has room
            order = sorted((i for i in range(len(fits)) if ks[i] < fits[i][1]),
                           key=lambda i: (loads[i] + ks[i] * steps[i], fits[i][0].spec.id))
            for i in order[:left]:
                ks[i] += 1
            left = count - sum(ks)
        return [(node, k) for (node, _), k in zip(fits, ks, strict=True)]

    def _allocate_many(self, node: _NodeState, r: Resources, k: int) -> list[Placement]:
        """Allocate ``k`` copies on ``node`` (which has room): one placement without GPUs,
        else one per GPU (fullest first) or per set of whole GPUs."""
        if not r.gpus:
            return [self._allocate(node, [], r, k)]
        share = min(r.gpus, 1.0)
        wanted = max(1, int(r.gpus))
        out = []
        if wanted == 1:
            order = sorted(range(len(node.gpus)),
                           key=lambda i: (-node.gpus[i].share, -node.gpus[i].memory, i))
            for i in order:
                n = min(k, _gpu_room(node.gpus[i], share, r.gpu_memory))
                if n:
                    out.append(self._allocate(node, [i], r, n))
                    k -= n
                if not k:
                    break
            return out
        for _ in range(k):
            free = [i for i, g in enumerate(node.gpus) if g.fits(share, r.gpu_memory)]
            out.append(self._allocate(node, free[:wanted], r))
        return out

    @staticmethod
    def _capacity(node: _NodeState, r: Resources) -> int:
        """How many copies of ``r`` fit on ``node`` now."""
        n = _UNBOUNDED
        if r.cpus > 0:
            n = min(n, math.floor((node.free_cpus() + _EPS) / r.cpus))
        if r.memory:
            n = min(n, max(0, (node.spec.memory - node.memory) // r.memory))
        if r.gpus:
            share = min(r.gpus, 1.0)
            wanted = max(1, int(r.gpus))
            if wanted == 1:
                n = min(n, sum(_gpu_room(g, share, r.gpu_memory) for g in node.gpus))
            else:
                n = min(n, sum(1 for g in node.gpus if g.fits(share, r.gpu_memory)) // wanted)
        return max(0, n)

    def _eligible(self, request: Resources, labels: dict[str, str] | None,
                  node_id: str | None, reasons: list[str]) -> Iterator[_NodeState]:
        """The nodes ``request`` could ever fit on (pinned by ``node_id``, matching
        ``labels``); the reason each other node cannot is appended to ``reasons``."""
        for node in self._nodes.values():
            if node_id is not None and node.spec.id != node_id:
                continue
            missing = {k: v for k, v in (labels or {}).items() if node.spec.labels.get(k) != v}
            if missing:
                reasons.append(f"{node.spec.id}: labels {missing} do not match")
                continue
            why_never = self._never_fits(node, request)
            if why_never:
                reasons.append(f"{node.spec.id}: {why_never}")
                continue
            yield node

    @staticmethod
    def _never_fits(node: _NodeState, r: Resources) -> str:
        spec = node.spec
        if r.cpus > spec.cpus + _EPS:
            return f"has {spec.cpus:g} CPUs, {r.cpus:g} requested"
        if r.memory and r.memory > spec.memory:
            return f"has {_gib(spec.memory)} memory, {_gib(r.memory)} requested"
        wanted = max(1, int(r.gpus)) if r.gpus else 0
        if wanted > len(spec.gpus):
            return f"has {len(spec.gpus)} GPUs, {wanted} requested"
        if wanted and r.gpu_memory:
            big = sum(1 for g in spec.gpus if g.total_memory >= r.gpu_memory)
            if big < wanted:
                return f"has no {wanted} GPU(s) with {_gib(r.gpu_memory)}"
        return ""

    @staticmethod
    def _fit(node: _NodeState, r: Resources) -> tuple[list[int], str]:
        if r.cpus > node.free_cpus() + _EPS:
            return [], f"{node.free_cpus():g} of {node.spec.cpus:g} CPUs free"
        if r.memory and node.memory + r.memory > node.spec.memory:
            return [], f"{_gib(node.spec.memory - node.memory)} memory free"
        if not r.gpus:
            return [], ""
        wanted = max(1, int(r.gpus))
        share = min(r.gpus, 1.0)
        fitting = [i for i, g in enumerate(node.gpus) if g.fits(share, r.gpu_memory)]
        if len(fitting) < wanted:
            return [], (f"{len(fitting)} GPU(s) with {share:g} share and "
                        f"{_gib(r.gpu_memory)} free, {wanted} needed")
        # Fractional requests go to the fullest GPU that fits (keep whole GPUs free).
        fitting.sort(key=lambda i: (-node.gpus[i].share, -node.gpus[i].memory, i))
        return fitting[:wanted], ""


_UNBOUNDED = 2**62


def _gpu_room(g: _GpuState, share: float, memory: int) -> int:
    """How many actors asking ``share`` of a GPU and ``memory`` of it fit on ``g``."""
    n = math.floor((1 - g.share + _EPS) / share)
    if memory:
        n = min(n, (g.gpu.total_memory - g.memory) // memory)
    return max(0, n)


def _step(spec: NodeSpec, r: Resources) -> float:
    """How much one copy of ``r`` adds to a node's load (as :meth:`_NodeState.load`)."""
    parts = [r.cpus / spec.cpus if spec.cpus else 0.0]
    if spec.memory:
        parts.append(r.memory / spec.memory)
    if spec.gpus and r.gpus:
        parts.append(min(r.gpus, 1.0) * max(1, int(r.gpus)) / len(spec.gpus))
    return max(parts)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}GiB"


def _describe(r: Resources) -> str:
    parts = [f"cpus={r.cpus:g}"]
    if r.memory:
        parts.append(f"memory={_gib(r.memory)}")
    if r.gpus:
        parts.append(f"gpus={r.gpus:g}")
    if r.gpu_memory:
        parts.append(f"gpu_memory={_gib(r.gpu_memory)}")
    return "Resources(" + ", ".join(parts) + ")"
