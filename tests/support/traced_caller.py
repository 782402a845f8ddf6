"""A driver process: calls an actor in a bus node inside a span; prints both trace ids.

    python -m tests.support.traced_caller

A separate process because it installs a global tracer provider.
"""

from __future__ import annotations

import asyncio
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from agentplex import Runtime
from agentplex.bus import ZmqTransport
from tests.support.bus_node import start_node


async def main() -> None:
    trace.set_tracer_provider(TracerProvider())
    async with Runtime(ZmqTransport(), default_timeout=20) as rt:
        node = await asyncio.to_thread(start_node, rt.transport.endpoint,  # type: ignore[attr-defined]
                                       "Echo:tracer")
        try:
            with trace.get_tracer("test").start_as_current_span("caller") as span:
                remote = await rt.ref("tracer").call("traceid")
                local = format(span.get_span_context().trace_id, "032x")
        finally:
            node.stop()
    print(local, remote)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
