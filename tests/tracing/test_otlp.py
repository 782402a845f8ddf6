"""The OTLP exporters deliver spans to a real OTLP receiver on loopback (HTTP and gRPC),
configured only through the standard OTEL_* environment variables."""

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

EMIT = textwrap.dedent('''
    import asyncio
    from agentplex import AgentBase, Msg, Runtime, ScriptedChatModel
    from agentplex.model import collect
    from agentplex.tracing import configure_tracing, dispatcher

    class A(AgentBase):
        async def reply(self, msg=None):
            await collect(await ScriptedChatModel(["ok"], model_name="otlp-model")([]))
            return Msg(self.name, "done", "assistant")

    async def main():
        async with Runtime():
            await A("otlp-agent")(Msg("u", "go", "user"))

    configure_tracing(batch=False)
    asyncio.run(main())
    dispatcher().shutdown()
''')


def span_names(request: trace_service_pb2.ExportTraceServiceRequest) -> list[str]:
    return [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def emit(env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-c", EMIT], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin", **env})
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, list[trace_service_pb2.ExportTraceServiceRequest]]]:
    received: list[trace_service_pb2.ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.path == "/v1/traces"
            assert self.headers["Content-Type"] == "application/x-protobuf"
            req = trace_service_pb2.ExportTraceServiceRequest()
            req.ParseFromString(body)
            received.append(req)
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()


def test_otlp_http_exporter_delivers_spans(
    http_receiver: tuple[str, list[trace_service_pb2.ExportTraceServiceRequest]],
) -> None:
    endpoint, received = http_receiver
    emit({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
          "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "otlp-test"})
    names = [n for req in received for n in span_names(req)]
    assert "invoke_agent otlp-agent" in names and "chat otlp-model" in names


def test_otlp_grpc_exporter_delivers_spans() -> None:
    received: list[trace_service_pb2.ExportTraceServiceRequest] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # type: ignore[no-untyped-def]
            received.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        emit({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
              "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
              "OTEL_EXPORTER_OTLP_INSECURE": "true"})
    finally:
        server.stop(grace=None)
    names = [n for req in received for n in span_names(req)]
    assert "invoke_agent otlp-agent" in names and "chat otlp-model" in names


def test_unknown_exporter_name_is_a_clear_error() -> None:
    proc = subprocess.run([sys.executable, "-c", EMIT], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin", "OTEL_TRACES_EXPORTER": "zipkin"})
    assert proc.returncode != 0 and "unsupported OTEL_TRACES_EXPORTER 'zipkin'" in proc.stderr
