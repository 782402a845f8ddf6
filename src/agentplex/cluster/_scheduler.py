"""Placement: which node (and which GPUs) satisfy a resource request.

The scheduler keeps the capacity of every node and what is allocated on it. It places by
declared resources only, never over-commits a GPU (neither its share nor its memory), and
says exactly why a request does not fit.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import Unschedulable
from ._resources import GPU, NodeSpec, Resources

__all__ = ["Placement", "PlacementPolicy", "Scheduler"]

PlacementPolicy = Literal["pack", "spread"]
_EPS = 1e-9


@dataclass(frozen=True)
class Placement:
    """Where an actor runs: its node, the GPUs it may see, and what it holds."""

    id: int
    node_id: str
    gpu_indices: tuple[int, ...]
    resources: Resources

    def cuda_visible_devices(self) -> str:
        """The ``CUDA_VISIBLE_DEVICES`` value for the actor's worker process."""
        return ",".join(str(i) for i in self.gpu_indices)


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

    def release(self, placement: Placement) -> None:
        """Give back what ``placement`` held (no-op if its node is gone)."""
        if self._placements.pop(placement.id, None) is None:
            return
        node = self._nodes.get(placement.node_id)
        if node is None:
            return
        r = placement.resources
        node.cpus -= r.cpus
        node.memory -= r.memory
        share = min(r.gpus, 1.0)
        for index in placement.gpu_indices:
            g = next(g for g in node.gpus if g.gpu.index == index)
            g.share -= share
            g.memory -= r.gpu_memory

    def _allocate(self, node: _NodeState, gpus: list[int], r: Resources) -> Placement:
        node.cpus += r.cpus
        node.memory += r.memory
        share = min(r.gpus, 1.0)
        for i in gpus:
            node.gpus[i].share += share
            node.gpus[i].memory += r.gpu_memory
        placement = Placement(next(self._ids), node.spec.id,
                              tuple(node.gpus[i].gpu.index for i in gpus), r)
        self._placements[placement.id] = placement
        return placement

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
