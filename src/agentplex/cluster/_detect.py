"""What this machine has: CPUs, memory and GPUs (through NVML, else torch), or what the
user declares for machines or tests without GPUs."""

from __future__ import annotations

import os
import socket
from typing import Any

from ._resources import GPU, NodeSpec, parse_bytes
from ._scheduler import Placement

__all__ = ["detect_gpus", "detect_node", "worker_environment"]


def _memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def detect_gpus() -> list[GPU]:
    """The GPUs visible to this process, with total and free memory; ``[]`` when none.

    Uses NVML (``nvidia-ml-py``) when installed, else ``torch.cuda`` when torch is.
    """
    try:
        import pynvml
    except ImportError:
        return _torch_gpus()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return _torch_gpus()
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(GPU(index=i, name=name.decode() if isinstance(name, bytes) else name,
                            total_memory=int(info.total), free_memory=int(info.free),
                            uuid=str(pynvml.nvmlDeviceGetUUID(handle))))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def _torch_gpus() -> list[GPU]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        gpus.append(GPU(index=i, name=torch.cuda.get_device_name(i), total_memory=total,
                        free_memory=free))
    return gpus


def detect_node(
    node_id: str | None = None,
    *,
    address: str = "",
    gpus: int | None = None,
    gpu_memory: int | str | None = None,
    cpus: float | None = None,
    labels: dict[str, str] | None = None,
) -> NodeSpec:
    """This machine as a :class:`NodeSpec`.

    ``gpus`` / ``gpu_memory`` declare GPUs instead of detecting them (for machines or tests
    without GPUs: declared GPUs are only accounted, nothing runs on them).
    """
    if gpus is not None:
        if gpus and gpu_memory is None:
            raise ValueError("declaring GPUs needs their memory too (e.g. gpu_memory='24GiB')")
        size = parse_bytes(gpu_memory) if gpu_memory is not None else 0
        found = [GPU(index=i, name="declared GPU", total_memory=size, free_memory=size)
                 for i in range(gpus)]
    else:
        found = detect_gpus()
    return NodeSpec(
        id=node_id or f"{socket.gethostname()}-{os.getpid()}",
        address=address,
        cpus=cpus if cpus is not None else float(os.cpu_count() or 1),
        memory=_memory(),
        gpus=found,
        labels=dict(labels or {}),
    )


def worker_environment(placement: Placement, base: dict[str, str] | None = None
                       ) -> dict[str, Any]:
    """The environment of an actor's worker process: it sees only its own GPUs."""
    env = dict(os.environ if base is None else base)
    env["CUDA_VISIBLE_DEVICES"] = placement.cuda_visible_devices()
    return env
