"""Prometheus metrics: request latency, messages triaged per label, SLA breaches, model version.

Each app has its own registry (several apps in one test process must not collide). Counts
that live in the database (breaches recorded by any process, cases per status) are read at
scrape time, so every server process reports the same totals.
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.responses import Response

from triage.taxonomy import HEADS


class _DatabaseCollector:
    def __init__(self, app: FastAPI):
        self.app = app

    def collect(self):
        service = self.app.state.service
        model = GaugeMetricFamily("triage_model_info", "The model version serving predictions (value 1)",
                                  labels=["version"])
        models = service.models
        if models.loaded:
            model.add_metric([str(getattr(models.triager, "version", "unknown"))], 1)
        yield model
        try:
            counts = service.counts()
        except Exception:
            return  # database down: /readyz says so; the scrape still returns process metrics
        breaches = GaugeMetricFamily("triage_sla_breaches", "SLA breaches recorded in the database",
                                     labels=["deadline"])
        for deadline in ("respond", "resolve"):
            breaches.add_metric([deadline], counts["breaches"].get(deadline, 0))
        yield breaches
        cases = GaugeMetricFamily("triage_cases", "Cases per status", labels=["status"])
        for status in ("open", "pending", "resolved", "closed"):
            cases.add_metric([status], counts["cases"].get(status, 0))
        yield cases


class LatencyMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware: that one costs a task and a stream per request)."""

    def __init__(self, app, histogram: Histogram):
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.histogram.labels(scope["method"], path, str(status[0])).observe(time.perf_counter() - started)


class Metrics:
    """``monitor_in_process``: this process runs the SLA monitor (no task queue), so it also
    counts the breaches it detects. With a task queue the workers detect them; every process
    then reports the database's total (``triage_sla_breaches``) and no per-process counter
    that would stay at zero."""

    def __init__(self, app: FastAPI, monitor_in_process: bool = True):
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "triage_http_request_duration_seconds", "HTTP request latency", ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10),
        )
        self.triaged = Counter("triage_messages_triaged_total", "Messages triaged, per head and label",
                               ["head", "label"], registry=self.registry)
        self.breaches = (
            Counter("triage_sla_breaches_detected_total", "SLA breaches this process's monitor detected",
                    ["deadline"], registry=self.registry)
            if monitor_in_process else None
        )
        self.registry.register(_DatabaseCollector(app))

    def count_triaged(self, case) -> None:
        labels = {"dispute_type": case.dispute_type, "urgency": case.grade, "emotion": case.emotion,
                  "escalation": case.escalation}
        for head in HEADS:
            value = labels[head]
            self.triaged.labels(head, str(value).lower() if isinstance(value, bool) else str(value)).inc()

    def install(self, app: FastAPI) -> None:
        app.add_middleware(LatencyMiddleware, histogram=self.latency)

        @app.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
