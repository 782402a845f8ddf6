"""Model calls in a process with a meter provider and nothing else (no tracing, no run).

    python -m tests.support.metered_calls memory   # prints the data points as JSON
    python -m tests.support.metered_calls otlp     # exports them over OTLP (OTEL_* variables)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

from agentplex import AgentBase, Msg, Runtime, ScriptedChatModel
from agentplex.model import collect
from agentplex.tracing import configure_metrics


class Analyst(AgentBase):
    """Asks its model once per message (streamed: the metrics wait for the last chunk)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model = ScriptedChatModel(["two words"], cycle=True, model_name="m", stream=True)
        self.set_console_output_enabled(False)

    async def reply(self, msg: Msg | None = None) -> Msg:
        await collect(await self.model([{"role": "user", "content": "one two three"}]))
        return Msg(self.name, "done", "assistant")


async def calls() -> None:
    async with Runtime():
        agents = [Analyst(f"analyst-{i}") for i in range(2)]
        for agent in agents * 2:
            await agent(Msg("user", "go", "user"))
    with contextlib.suppress(IndexError):  # a model that fails, outside any agent
        await ScriptedChatModel([], model_name="empty")([{"role": "user", "content": "x"}])


def points(reader: Any) -> list[dict[str, Any]]:
    out = []
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    out.append({"name": metric.name, "unit": metric.unit,
                                "attributes": dict(p.attributes), "count": p.count,
                                "sum": p.sum, "bounds": list(p.explicit_bounds)})
    return out


def main(mode: str) -> None:
    if mode == "memory":
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        configure_metrics([reader])
        asyncio.run(calls())
        print(json.dumps(points(reader)))
    else:
        provider = configure_metrics(otlp=True, interval_s=3600)
        asyncio.run(calls())
        provider.shutdown()  # sends what was recorded


if __name__ == "__main__":
    main(sys.argv[1])
