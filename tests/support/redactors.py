"""A module a node admits for remote spawns that, like many real ones, imports more than it
defines: the allow-list attack tests try to reach those imports through it."""

from __future__ import annotations

from typing import Any

import agentplex  # noqa: F401  (the attack walks `agentplex.cluster.EngineActor` from here)
from agentplex import Actor
from agentplex.agent import CodeAgent  # noqa: F401  (a re-exported actor class)
from agentplex.cluster import EngineActor  # noqa: F401  (a re-exported actor class)


class Redactor(Actor):
    """The one actor this module defines: answers with its input, redacted."""

    class Inner(Actor):
        """A nested actor class (remote spawns name top-level classes only)."""

    async def handle_call(self, message: Any) -> Any:
        return "[redacted]"


Alias = Redactor  # another top-level name for a class defined here
