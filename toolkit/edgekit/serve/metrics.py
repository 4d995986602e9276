"""Prometheus metrics for ``edgekit serve``: requests, latency, batch sizes, cache, fallbacks, queue.

Counters that the runtime already keeps (fallbacks by reason, cache hits, queue depth) are read
at scrape time by a collector instead of being counted twice.
"""

from __future__ import annotations

from typing import Callable


class ServeMetrics:
    def __init__(self, models: Callable[[], list]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("edgekit_requests", "Requests by model, route and HTTP status",
                                ["model", "route", "status"], registry=self.registry)
        self.latency = Histogram("edgekit_request_seconds", "Server-side time per request", ["model", "route"],
                                 buckets=(.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                                          2.5, 5, 10), registry=self.registry)
        self.batch_rows = Histogram("edgekit_batch_rows", "Rows per forward pass", ["model"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.shed = Counter("edgekit_shed_requests", "Requests refused because the queue was full",
                            ["model"], registry=self.registry)
        self.inflight = Gauge("edgekit_inflight_requests", "Requests being handled", registry=self.registry)
        self.registry.register(_RuntimeCollector(models))
        self._children: dict = {}

    def child(self, metric, *labels: str):
        """``metric.labels(*labels)``, cached: labels() takes a lock and builds a key per call,
        a measurable share of a request's time. The label sets are bounded by the caller."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def batch(self, model: str, rows: int) -> None:
        self.child(self.batch_rows, model).observe(rows)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _RuntimeCollector:
    """Cache hits and misses, fallbacks by reason, queue depth and the active variant, read from
    each served model when Prometheus scrapes."""

    def __init__(self, models: Callable[[], list]):
        self.models = models

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        # Labelled by version too: two versions of one model are served side by side, and the
        # same label set twice is a scrape Prometheus rejects.
        cache = CounterMetricFamily("edgekit_cache_lookups", "Response cache lookups",
                                    labels=["model", "version", "result"])
        fallbacks = CounterMetricFamily("edgekit_fallbacks", "Variant fallbacks by reason",
                                        labels=["model", "version", "reason"])
        queue = GaugeMetricFamily("edgekit_queue_rows", "Rows waiting for a batch", labels=["model", "version"])
        active = GaugeMetricFamily("edgekit_active_variant", "The variant answering (1)",
                                   labels=["model", "version", "variant"])
        for m in self.models():
            if m.cache is not None:
                cache.add_metric([m.name, m.version, "hit"], m.cache.hits)
                cache.add_metric([m.name, m.version, "miss"], m.cache.misses)
            for reason, count in m.runtime.stats()["fallbacks_by_reason"].items():
                fallbacks.add_metric([m.name, m.version, reason], count)
            queue.add_metric([m.name, m.version], m.batcher.queued_rows if m.batcher else 0)
            if m.runtime.active is not None:
                active.add_metric([m.name, m.version, m.runtime.active.id], 1)
        yield from (cache, fallbacks, queue, active)
