""":func:`init`: a cluster to spawn actors on, with nothing to set up."""

from __future__ import annotations

from typing import Any

from ._cluster import Cluster
from ._detect import detect_node
from ._protocol import ClusterAPI

__all__ = ["init"]


async def init(*, backend: str = "local", gpus: int | None = None,
               gpu_memory: str | int | None = None, labels: dict[str, str] | None = None,
               checkpoint_interval: float | None = 5.0, **ray_init: Any) -> ClusterAPI:
    """A cluster to spawn actors on, with nothing to set up.

    ``backend="local"`` (default): this machine alone, in this process, no daemons;
    ``gpus`` / ``gpu_memory`` declare GPUs instead of detecting them. ``backend="ray"``: a
    :class:`~agentplex.cluster.RayCluster` (``ray_init`` goes to ``ray.init``, e.g.
    ``address="auto"`` or ``num_gpus=4`` for logical GPUs). Either way the answer is a
    :class:`~agentplex.cluster.ClusterAPI`.
    """
    if backend == "ray":
        from ._ray import RayCluster

        if gpus is not None:
            ray_init.setdefault("num_gpus", gpus)
        return await RayCluster.start(checkpoint_interval=checkpoint_interval, **ray_init)
    if backend != "local":
        raise ValueError(f"unknown cluster backend {backend!r} (use 'local' or 'ray')")
    cluster = await Cluster(checkpoint_interval=checkpoint_interval).start()
    await cluster.add_node(detect_node("local", gpus=gpus, gpu_memory=gpu_memory,
                                       labels=labels))
    return cluster
