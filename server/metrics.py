"""Prometheus metrics of the server, in a registry of its own (one per app)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("rankstill_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=r)
        self.request_seconds = Histogram("rankstill_request_seconds", "HTTP request latency",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_pairs = Histogram("rankstill_batch_pairs", "(query, document) pairs per model batch",
                                     ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("rankstill_batch_requests", "Requests merged into one model batch",
                                        ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.stage_seconds = Histogram("rankstill_stage_seconds", "Time per batch in each stage",
                                       ["model", "stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.queued_tokens = Gauge("rankstill_queued_tokens", "Tokens waiting for or in a model run",
                                   ["model"], registry=r)
        self.truncated = Counter("rankstill_truncated_pairs", "Pairs cut to the model's max length",
                                 ["model"], registry=r)
        self.rejected = Counter("rankstill_overload_rejections", "Requests refused with 503 (queue full)",
                                registry=r)

    def batch_observer(self, model: str):
        """Called by the batcher after each model run with the requests' tokenized pairs."""
        def observe(requests: list, seconds: float) -> None:
            self.batch_pairs.labels(model).observe(sum(len(pairs) for pairs in requests))
            self.batch_requests.labels(model).observe(len(requests))
            self.stage_seconds.labels(model, "inference").observe(seconds)
            self.truncated.labels(model).inc(sum(int(pairs.truncated.sum()) for pairs in requests))
        return observe


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request by route template."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began = time.perf_counter()
        status = 500

        async def send_and_record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(name, str(status)).inc()
            self.metrics.request_seconds.labels(name).observe(time.perf_counter() - began)
