"""Every monitoring signal, defined once: its name, what it means, its unit, which count is its
sample, and whether it is a Prometheus series and a Grafana panel.

Alert rules are checked against this catalog (a rule on a name it lacks is refused with the
closest ones), the collector's /metrics exports the signals marked ``exported`` under
``edgekit_monitor_<name>`` with the meaning as help text, and ``edgekit monitor grafana`` builds
its dashboard from the ones with a ``panel``. A test holds it equal to what a snapshot computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# Grafana units: a share shown as a percentage, milliseconds, seconds, a plain count.
SHARE, MS, SECONDS, COUNT = "percentunit", "ms", "s", "short"


@dataclass(frozen=True)
class Signal:
    name: str
    meaning: str
    unit: str = COUNT
    sample: str = ""  # the count that is this signal's sample size (min_samples of a rule)
    exported: bool = False  # a Prometheus gauge
    panel: Optional[str] = None  # a panel of the Grafana dashboard, titled so

    @property
    def metric(self) -> str:
        return "edgekit_monitor_" + self.name.replace(".", "_")


# Which count a family's signals are judged over, unless a signal says otherwise.
FAMILY_SAMPLE = {"feedback": "feedback.labelled", "performance": "rows", "proxy": "records", "quality": "quality.rows",
                 "drift": "drift.rows", "system": "records"}

_ALL = [
    Signal("records", "predictions logged in the window", exported=True, panel="Predictions in the window"),
    Signal("rows", "samples in those predictions (a batch prediction has several)"),
    # 1. outcomes and feedback
    Signal("feedback.rate", "share of predictions that got feedback", SHARE, "records", exported=True),
    Signal("feedback.count", "feedback rows given in the window"),
    Signal("feedback.labelled", "predictions with a label from users (curated labels aside)", exported=True),
    Signal("feedback.accuracy", "accuracy against users' labels", SHARE, "feedback.labelled", exported=True,
           panel="Feedback accuracy"),
    Signal("feedback.accuracy_low", "lower bound of the accuracy's Wilson 95% interval", SHARE),
    Signal("feedback.accuracy_high", "upper bound of the accuracy's Wilson 95% interval", SHARE),
    Signal("feedback.accuracy_drop", "the reference's accuracy minus the accuracy against labels", SHARE,
           "feedback.labelled"),
    Signal("feedback.accuracy_drop_certain", "the drop beyond the interval (0 when chance explains it)", SHARE,
           "feedback.labelled"),
    Signal("feedback.macro_f1", "macro F1 against users' labels", SHARE, "feedback.labelled"),
    Signal("feedback.outcomes", "feedback rows with an outcome (accepted, corrected, rejected...)"),
    Signal("feedback.negative_share", "share of outcomes that were negative (corrected, rejected...)", SHARE,
           "feedback.outcomes", exported=True),
    Signal("feedback.window_s", "how far back labels were taken (a scope under 30 labels looks further)", SECONDS),
    Signal("feedback.coverage", "share of the window's predictions that have a label", SHARE),
    Signal("feedback.lag_mean_s", "mean time from a prediction to its label", SECONDS),
    Signal("feedback.lag_p90_s", "90th percentile of the time from a prediction to its label", SECONDS),
    # 2. performance without labels
    Signal("performance.estimated_accuracy", "accuracy estimated from calibrated confidences (CBPE)", SHARE,
           exported=True, panel="Estimated accuracy (no labels)"),
    Signal("performance.estimated_low", "lower bound of the estimate's 95% interval", SHARE),
    Signal("performance.estimated_high", "upper bound of the estimate's 95% interval", SHARE),
    Signal("performance.estimated_drop", "the reference's accuracy minus the estimate", SHARE, exported=True),
    Signal("performance.reference_accuracy", "accuracy on the reference data", SHARE),
    # 3. proxies
    Signal("proxy.low_confidence_share", "share below the reference's 5th-percentile confidence", SHARE,
           exported=True, panel="Low-confidence share"),
    Signal("proxy.low_confidence_expected", "that share on the reference (5%)", SHARE),
    Signal("proxy.low_confidence_excess", "the low-confidence share over the expected one (a ratio)"),
    Signal("proxy.entropy_mean", "mean normalised entropy of the outputs", SHARE, exported=True),
    Signal("proxy.top_class_share", "share of the most predicted class", SHARE, exported=True),
    Signal("proxy.top_class_share_reference", "that share on the reference", SHARE),
    Signal("proxy.class_shift", "total variation between the predicted classes and the reference's", SHARE),
    Signal("proxy.class_shift_p", "p-value of the two-sample chi-squared test of that shift"),
    Signal("proxy.identical_output_share", "share of outputs identical on a device within an hour for different inputs", SHARE,
           exported=True, panel="Identical outputs for different inputs"),
    Signal("proxy.repeated_input_share", "share of inputs a device saw before within the hour (a frozen camera)", SHARE,
           exported=True),
    Signal("proxy.nonfinite_share", "share of outputs with NaN or infinity", SHARE, exported=True),
    Signal("proxy.fallback_share", "share of predictions served by a fallback variant", SHARE, exported=True,
           panel="Fallback share"),
    Signal("proxy.cached_share", "share of predictions answered from the output cache", SHARE, exported=True),
    # 4. data quality
    Signal("quality.rows", "rows the data checks judged"),
    Signal("quality.failing_share", "the worst failing share of a data check", SHARE, exported=True,
           panel="Data quality: worst failing share"),
    Signal("quality.failed_checks", "data checks that failed"),
    # 5. drift
    Signal("drift.rows", "rows judged for drift"),
    Signal("drift.judged", "features judged for drift"),
    Signal("drift.share", "share of the judged features that drifted", SHARE, exported=True, panel="Drifted features"),
    Signal("drift.dataset", "1 when half of the features drifted (dataset drift), else 0", exported=True),
    # 6. system
    Signal("system.latency_p50_ms", "median latency on the devices", MS, exported=True),
    Signal("system.latency_p95_ms", "95th percentile latency on the devices", MS, exported=True,
           panel="Latency p95 (ms)"),
    Signal("system.latency_p99_ms", "99th percentile latency on the devices", MS, exported=True),
    Signal("system.latency_p50_ratio", "median latency over the scope's own week before"),
    Signal("system.latency_p95_ratio", "95th percentile latency over the scope's own week before"),
    Signal("system.devices", "devices that logged in the window", exported=True),
    Signal("system.devices_reporting", "devices that reported their log store's health"),
    Signal("system.silent_devices", "devices not seen for a day", exported=True, panel="Silent devices"),
    Signal("system.dropped", "log records devices dropped (a full store)", exported=True,
           panel="Dropped log records"),
    Signal("system.pending", "log records waiting on devices", exported=True),
    Signal("system.dead_letter", "log records devices could not deliver"),
    Signal("system.lag_mean_s", "mean time from a prediction to its arrival", SECONDS),
    Signal("system.lag_max_s", "longest time from a prediction to its arrival", SECONDS, exported=True),
    Signal("system.last_record", "time of the newest record (Unix seconds)", SECONDS),
]
CATALOG: dict[str, Signal] = {s.name: s for s in _ALL}


def sample_of(name: str) -> str:
    """The count a signal's ``min_samples`` is judged against."""
    signal = CATALOG.get(name)
    return (signal.sample if signal and signal.sample else "") or FAMILY_SAMPLE.get(name.split(".")[0], "records")


def exported() -> list[Signal]:
    return [s for s in _ALL if s.exported]


def dashboard() -> dict:
    """The Grafana dashboard over the collector's /metrics: a panel per signal that has one (in
    the catalog's order, three to a row) and the collector's own batches."""
    panels = [(s.panel, s.unit, f'{s.metric}{{model=~"$model", group=~"$group"}}', "{{model}} {{version}} {{group}}")
              for s in _ALL if s.panel]
    panels.append(("Collector batches", "reqps", "rate(edgekit_collector_batches_total[5m])", "{{result}}"))
    source = {"type": "prometheus", "uid": "${datasource}"}
    first = CATALOG["records"].metric

    def variable(name: str, query: str) -> dict:
        return {"name": name, "type": "query", "datasource": source, "query": query, "includeAll": True,
                "multi": True, "refresh": 2}

    return {
        "title": "edgekit: models in the field", "uid": "edgekit-monitor", "schemaVersion": 39, "version": 1,
        "tags": ["edgekit"], "time": {"from": "now-24h", "to": "now"}, "refresh": "1m",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
            variable("model", f"label_values({first}, model)"),
            variable("group", f'label_values({first}{{model=~"$model"}}, group)')]},
        "panels": [{"id": i + 1, "type": "timeseries", "title": title,
                    "gridPos": {"x": 8 * (i % 3), "y": 8 * (i // 3), "w": 8, "h": 8}, "datasource": source,
                    "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                    "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}]}
                   for i, (title, unit, expr, legend) in enumerate(panels)],
    }
