"""A driver of a run on a running cluster, as a user's program is: it spawns one batch for
run ``RUN`` and one detached batch for run ``RUN-kept``, prints ``ready`` and waits (to be
killed), or with ``--raise`` fails as a program with a bug does.

    python -m tests.support.cluster_driver HEAD RUN [--raise]
"""

from __future__ import annotations

import asyncio
import sys

from agentplex import connect
from agentplex.cluster import ClusterClient

COUNTER = "tests.support.actors:Counter"


async def drive(head: str, run: str, fail: bool) -> None:
    async with connect(head) as rt:
        client = ClusterClient(rt, timeout=60)
        async with client:
            await client.spawn_many(COUNTER, 30, names=f"{run}-", run=run)
            await client.spawn_many(COUNTER, 20, names=f"{run}-kept-", run=f"{run}-kept",
                                    detach=True)
            print("ready", flush=True)
            if fail:
                raise RuntimeError("a bug in the driver")
            await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(drive(sys.argv[1], sys.argv[2], "--raise" in sys.argv[3:]))
