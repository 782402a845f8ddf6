"""Actors the cluster tests spawn by import path (``tests.cluster.actors:Name``)."""

from __future__ import annotations

import os
from typing import Any

from agentplex.agent import StateModule
from agentplex.runtime import Actor


class Counter(StateModule, Actor):
    """Counts; its count survives a restart through ``state_dict``."""

    def __init__(self, start: int = 0) -> None:
        self.count = start
        self.register_state("count")

    async def handle_call(self, message: Any) -> Any:
        if message == "where":
            placement = getattr(self, "placement", None)
            return placement.node_id if placement is not None else None
        if message == "gpus":
            placement = getattr(self, "placement", None)
            return placement.cuda_visible_devices() if placement is not None else None
        if message == "env":
            return os.environ.get("CUDA_VISIBLE_DEVICES")
        self.count += int(message)
        return self.count
