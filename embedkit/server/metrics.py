"""Prometheus metrics in a per-app registry (never the process-global one)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (.002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("embedkit_requests", "HTTP requests by route, method and status code.",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("embedkit_request_duration_seconds", "HTTP request latency by route.",
                                 ["endpoint", "method"], buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("embedkit_requests_in_flight", "HTTP requests being handled.", registry=r)
        self.batch_texts = Histogram("embedkit_batch_size", "Texts per encoder call.",
                                     buckets=_BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("embedkit_batch_requests", "Requests merged into one encoder call.",
                                        buckets=_BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("embedkit_batch_duration_seconds", "Time of one encoder call.",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.texts = Counter("embedkit_texts_encoded", "Texts encoded.", registry=r)
        self.abandoned = Counter("embedkit_texts_abandoned", "Queued texts dropped unencoded because their "
                                 "client disconnected.", registry=r)
        self.rejected = Counter("embedkit_queue_rejections", "Requests refused with 503 because the queue was full.",
                                registry=r)
        self.queue_depth = Gauge("embedkit_queue_depth", "Texts waiting for the encoder.", registry=r)
        self.documents = Gauge("embedkit_index_documents", "Documents in the served index.", registry=r)

    def observe_batch(self, texts: int, requests: int, seconds: float) -> None:
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)
        self.batch_seconds.observe(seconds)
        self.texts.inc(texts)

    def observe_abandoned(self, texts: int) -> None:
        self.abandoned.inc(texts)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint, method).observe(seconds)

    def bind(self, queue_depth: Callable[[], float], documents: Callable[[], float]) -> None:
        """Gauges read live values at scrape time."""
        self.queue_depth.set_function(queue_depth)
        self.documents.set_function(documents)

    def render(self) -> bytes:
        return generate_latest(self.registry)
