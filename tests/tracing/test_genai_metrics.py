"""Model calls emit the OpenTelemetry GenAI client metrics, with the asking agent's name,
through whatever meter provider is installed — also to an OTLP/HTTP receiver on loopback.

Each case runs in a process of its own: a meter provider is installed once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from tests.support import ROOT

TOKEN_USAGE = "gen_ai.client.token.usage"
DURATION = "gen_ai.client.operation.duration"


def run_calls(mode: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([sys.executable, "-m", "tests.support.metered_calls", mode],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def check(points: list[dict[str, Any]]) -> None:
    """Four calls of ``m`` by two agents (3 input and 2 output tokens each), one failed
    call of ``empty`` outside any agent."""
    def find(name: str, **attrs: Any) -> list[dict[str, Any]]:
        return [p for p in points if p["name"] == name
                and all(p["attributes"].get(k) == v for k, v in attrs.items())]

    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "scripted",
            "gen_ai.request.model": "m"}
    for agent in ("analyst-0", "analyst-1"):
        inputs = find(TOKEN_USAGE, **base, **{"gen_ai.agent.name": agent,
                                              "gen_ai.token.type": "input"})
        outputs = find(TOKEN_USAGE, **base, **{"gen_ai.agent.name": agent,
                                               "gen_ai.token.type": "output"})
        assert [(p["count"], p["sum"]) for p in inputs] == [(2, 6)]
        assert [(p["count"], p["sum"]) for p in outputs] == [(2, 4)]
        durations = find(DURATION, **base, **{"gen_ai.agent.name": agent})
        assert [p["count"] for p in durations] == [2] and durations[0]["sum"] > 0
    failed = find(DURATION, **{"gen_ai.request.model": "empty", "error.type": "IndexError"})
    assert [p["count"] for p in failed] == [1]
    assert "gen_ai.agent.name" not in failed[0]["attributes"]
    assert not find(TOKEN_USAGE, **{"gen_ai.request.model": "empty"})


def test_metrics_reach_an_in_memory_reader() -> None:
    points = json.loads(run_calls("memory"))
    check(points)
    units = {p["name"]: p["unit"] for p in points}
    assert units == {TOKEN_USAGE: "{token}", DURATION: "s"}
    token_bounds = next(p["bounds"] for p in points if p["name"] == TOKEN_USAGE)
    assert token_bounds[:3] == [1, 4, 16]  # the conventions' advised buckets


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector's metrics endpoint: keeps each request's body."""

    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", Receiver.bodies
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_reach_an_otlp_http_receiver(
        receiver: tuple[str, list[tuple[str, bytes]]]) -> None:
    pb2 = pytest.importorskip(
        "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")
    endpoint, bodies = receiver
    run_calls("otlp", {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                       "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert bodies and all(path == "/v1/metrics" for path, _ in bodies)
    points = []
    for _, body in bodies:
        request = pb2.ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for p in metric.histogram.data_points:
                        attrs = {a.key: (a.value.string_value or a.value.int_value)
                                 for a in p.attributes}
                        points.append({"name": metric.name, "unit": metric.unit,
                                       "attributes": attrs, "count": p.count, "sum": p.sum})
    check(points)
