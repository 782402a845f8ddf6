"""Prometheus metrics of one server: requests, tokens, queue length, time to first token."""

from __future__ import annotations

from typing import Any

__all__ = ["ServerMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0)


class ServerMetrics:
    """The server's metrics in a registry of their own (several servers per process are
    fine), rendered in Prometheus' text format by :meth:`render`."""

    content_type: str

    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:  # pragma: no cover - the serve extra installs it
            raise ImportError("agentplex serve needs prometheus_client: "
                              "pip install 'agentplex[serve]'") from exc
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self.content_type = prom.CONTENT_TYPE_LATEST
        reg: dict[str, Any] = {"registry": self.registry}
        self.requests = prom.Counter(
            "agentplex_requests", "Chat completion requests answered, by model and HTTP status.",
            ["model", "status"], **reg)
        self.prompt_tokens = prom.Counter(
            "agentplex_prompt_tokens", "Prompt tokens of answered requests.", ["model"], **reg)
        self.completion_tokens = prom.Counter(
            "agentplex_completion_tokens", "Generated tokens of answered requests.", ["model"],
            **reg)
        self.queue_length = prom.Gauge(
            "agentplex_queue_length", "Requests waiting for a slot.", **reg)
        self.running = prom.Gauge(
            "agentplex_requests_running", "Requests being answered now.", **reg)
        self.ttft = prom.Histogram(
            "agentplex_time_to_first_token_seconds",
            "Seconds from a request's arrival to its first token (the whole answer when not "
            "streamed).", ["model"], buckets=_LATENCY_BUCKETS, **reg)
        self.duration = prom.Histogram(
            "agentplex_request_duration_seconds", "Seconds from a request's arrival to its end.",
            ["model"], buckets=_LATENCY_BUCKETS, **reg)

        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept (looking the labels up costs a lock each time)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def first_token(self, model: str, seconds: float) -> None:
        """Observe one request's time to first token."""
        self._child(self.ttft, model).observe(seconds)

    def answered(self, model: str, status: int, prompt: int = 0, completion: int = 0,
                 seconds: float | None = None) -> None:
        """Count one finished request."""
        self._child(self.requests, model, str(status)).inc()
        if prompt:
            self._child(self.prompt_tokens, model).inc(prompt)
        if completion:
            self._child(self.completion_tokens, model).inc(completion)
        if seconds is not None:
            self._child(self.duration, model).observe(seconds)

    def render(self) -> bytes:
        """Every metric in Prometheus' text exposition format."""
        data: bytes = self._prom.generate_latest(self.registry)
        return data
