"""The collector's /metrics: the monitoring signals as Prometheus gauges, and ingest counters.

Gauges are ``edgekit_monitor_<signal>`` (dots become underscores) labelled by model, version and
device group, computed over the last ``window_s`` on scrape and cached for ``cache_s`` (a scrape
every 15 s does not recompute drift four times a minute). Which signals, their names and help
texts come from the catalog (``edgekit.monitor.catalog``), as does ``edgekit monitor grafana``.
"""

from __future__ import annotations

import threading
import time

from .catalog import exported

# Signals worth a time series (the catalog marks them); the rest stay in reports.
EXPORTED = tuple(s.name for s in exported())


MAX_MODELS = 50  # series for at most this many models (the busiest) ...
MAX_VERSIONS = 10  # ... and this many versions of each (published ones first, then the busiest)


class SignalCollector:
    """A prometheus_client collector over the collector database."""

    def __init__(self, db, window_s: float = 3600.0, cache_s: float = 30.0):
        self.db, self.window_s, self.cache_s = db, window_s, cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list] = (-1e9, [])

    def _models(self, now: float) -> list[str]:
        with self.db.read() as tx:
            rows = tx.all("SELECT model, SUM(n) FROM sketches WHERE hour >= ? GROUP BY model ORDER BY 2 DESC LIMIT ?",
                          (int((now - self.window_s) // 3600) * 3600, MAX_MODELS))
        return sorted(r[0] for r in rows)

    def _versions(self, model: str, scopes) -> set[str]:
        """The versions that get series: published ones, then the busiest, at most MAX_VERSIONS.
        Devices send version strings; one series per string sent would let one device grow
        /metrics (and Prometheus) without bound."""
        with self.db.read() as tx:
            published = {r[0] for r in tx.all("SELECT version FROM releases WHERE model = ?", (model,))}
        busiest = sorted({str(s.key.get("version", "")): s.signals.get("records") or 0 for s in scopes}.items(),
                         key=lambda kv: -kv[1])
        shown = [v for v, _ in busiest if v in published][:MAX_VERSIONS]
        shown += [v for v, _ in busiest if v not in published][:MAX_VERSIONS - len(shown)]
        return set(shown)

    def _compute(self) -> list:
        from prometheus_client.core import GaugeMetricFamily

        from .rollups import backlog
        from .signals import snapshot

        now = time.time()
        families = {s.name: GaugeMetricFamily(s.metric, f"{s.meaning} (edgekit signal {s.name}, over the last "
                                              f"{self.window_s / 3600:g} h)", labels=["model", "version", "group"])
                    for s in exported()}
        hidden = GaugeMetricFamily("edgekit_monitor_versions_not_shown", "Versions logged in the window that get no "
                                   f"series (beyond the {MAX_VERSIONS} shown per model)", labels=["model"])
        for model in self._models(now):
            snap = snapshot(self.db, model, now - self.window_s, now, by=("version", "group"), raw_suite=False,
                            series=False, now=now)
            shown = self._versions(model, snap.scopes)
            hidden.add_metric([model], len({str(s.key.get("version", "")) for s in snap.scopes} - shown))
            for scope in snap.scopes:
                if str(scope.key.get("version", "")) not in shown:
                    continue
                labels = [model, str(scope.key.get("version", "")), str(scope.key.get("group", ""))]
                for signal in EXPORTED:
                    value = scope.signals.get(signal)
                    if isinstance(value, (int, float)):
                        families[signal].add_metric(labels, float(value))
        with self.db.read() as tx:
            waiting = backlog(tx)
        pending = GaugeMetricFamily("edgekit_collector_rollup_pending_device_hours",
                                    "Device hours ingested and not rolled up yet (reports read them from records)")
        pending.add_metric([], waiting["device_hours"])
        # a growing age says nothing rolls up (--rollup-every 0 and no cron): alert on it
        age = GaugeMetricFamily("edgekit_collector_rollup_oldest_pending_age_seconds",
                                "Seconds since the end of the oldest hour waiting to be rolled up (0: none waits)")
        age.add_metric([], max(0.0, now - waiting["oldest_hour"] - 3600) if waiting["oldest_hour"] is not None else 0.0)
        return [*families.values(), hidden, pending, age]

    def collect(self):
        with self._lock:
            at, families = self._cached
            if time.monotonic() - at >= self.cache_s:
                families = self._compute()
                self._cached = (time.monotonic(), families)
        yield from families


class IngestCounters:
    """What the collector itself did: batches by outcome, records accepted and duplicated."""

    def __init__(self, registry):
        from prometheus_client import Counter

        self.batches = Counter("edgekit_collector_batches", "Device batches by outcome", ["result"], registry=registry)
        self.records = Counter("edgekit_collector_records", "Records received", ["result"], registry=registry)
        self.feedback = Counter("edgekit_collector_feedback", "Feedback rows received", ["result"], registry=registry)
        self.intervals = Counter("edgekit_collector_canary_intervals",
                                 "Canary decision intervals this replica judged, or left to another replica",
                                 ["result"], registry=registry)

    def ticked(self, decided: bool) -> None:
        self.intervals.labels("decided" if decided else "another_replica").inc()

    def accepted(self, result: dict, replayed: bool) -> None:
        self.batches.labels("replayed" if replayed else "accepted").inc()
        if not replayed:
            self.records.labels("accepted").inc(result.get("accepted", 0))
            self.records.labels("duplicate").inc(result.get("duplicates", 0))
            self.feedback.labels("accepted").inc(result.get("feedback_accepted", 0))
            self.feedback.labels("duplicate").inc(result.get("feedback_duplicates", 0))

    def refused(self, status: int) -> None:
        self.batches.labels(f"refused_{status}").inc()
