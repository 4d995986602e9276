"""The monitoring report: one self-contained HTML page (plots embedded as PNG) plus report.json.

Read top to bottom it answers, in order: is anything wrong (alerts, most severe first), where
(a health table per version and device group, the cells behind an alert in red), since when
(each signal over time, per scope), and why (drift per feature, failing data checks, feedback,
fallback reasons, silent devices).
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from string import Template
from typing import Optional

from .._io import atomic_directory, to_json
from .._schema import Document
from .._plot import pyplot
from .rules import Alert
from .signals import Snapshot

# The health table: (title, signal, format, sample signal shown next to it)
COLUMNS = (
    ("records", "records", "{:,.0f}", None),
    ("feedback accuracy", "feedback.accuracy", "{:.1%}", "feedback.labelled"),
    ("negative feedback", "feedback.negative_share", "{:.1%}", "feedback.outcomes"),
    ("est. accuracy", "performance.estimated_accuracy", "{:.1%}", None),
    ("low confidence", "proxy.low_confidence_share", "{:.1%}", None),
    ("identical outputs", "proxy.identical_output_share", "{:.1%}", None),
    ("repeated inputs", "proxy.repeated_input_share", "{:.1%}", None),
    ("fallbacks", "proxy.fallback_share", "{:.1%}", None),
    ("class shift", "proxy.class_shift", "{:.2f}", None),
    ("data quality (worst check failing)", "quality.failing_share", "{:.1%}", None),
    ("drifted features", "drift.share", "{:.0%}", "drift.judged"),
    ("p95 latency ms", "system.latency_p95_ms", "{:.2f}", None),
    ("devices (silent)", "system.devices", "{:.0f}", "system.silent_devices"),
)
# An alert's signal -> the health-table column it shows in.
SHOWN_AS = {"feedback.accuracy_drop_certain": "feedback.accuracy", "feedback.accuracy_drop": "feedback.accuracy",
            "feedback.macro_f1": "feedback.accuracy", "performance.estimated_drop": "performance.estimated_accuracy",
            "proxy.low_confidence_excess": "proxy.low_confidence_share", "drift.dataset": "drift.share",
            "quality.failed_checks": "quality.failing_share", "system.silent_devices": "system.devices",
            "system.dropped": "system.devices", "system.dead_letter": "system.devices",
            "system.latency_p99_ms": "system.latency_p95_ms", "system.latency_p50_ratio": "system.latency_p95_ms",
            "system.latency_p95_ratio": "system.latency_p95_ms"}
SERIES = (("performance.estimated_accuracy", "estimated accuracy"), ("proxy.low_confidence_share", "low-confidence share"),
          ("drift.share", "share of drifted features"), ("system.latency_p95_ms", "p95 latency (ms)"))
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def format_value(value, pattern: str) -> str:
    if value is None:
        return "-"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def _when(t: Optional[float]) -> str:
    if not t:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _plots(snap: Snapshot) -> dict[str, str]:
    """Base64 PNGs: signals over time, and the total's drift per feature."""
    plt = pyplot()
    if plt is None:
        return {}
    out = {}
    shown = [(key, title) for key, title in SERIES if snap.series.get(key)]
    if shown:
        fig, axes = plt.subplots(len(shown), 1, figsize=(9, 2.3 * len(shown)), sharex=True, squeeze=False)
        for ax, (key, title) in zip(axes[:, 0], shown):
            for scope, points in sorted(snap.series[key].items()):
                xs = [datetime.fromtimestamp(p[0], timezone.utc) for p in points]
                ax.plot(xs, [p[1] for p in points], marker="o", markersize=3, label=scope)
            ax.set_title(title, fontsize=9, loc="left")
            ax.grid(alpha=0.3)
            ax.set_xlim(datetime.fromtimestamp(snap.start, timezone.utc), datetime.fromtimestamp(snap.end, timezone.utc))
        axes[0, 0].legend(fontsize=7, ncol=3, loc="best")
        fig.autofmt_xdate()
        fig.tight_layout()
        out["series"] = _png(fig)
    drift = snap.total.details.get("drift", {}).get("features", [])
    judged = [f for f in drift if f["judged"]]
    if judged:
        fig, ax = plt.subplots(figsize=(8, 0.28 * len(judged) + 1.2))
        # distances over their threshold; p-values as how many times smaller, in orders of magnitude
        scores = [f["score"] / f["threshold"] if f["method"] in ("wasserstein", "jensenshannon")
                  else math.log10(max(f["score"], 1e-300)) / math.log10(f["threshold"]) for f in judged]
        colors = ["tab:red" if f["drifted"] else "tab:green" for f in judged]
        ax.barh(range(len(judged)), [max(min(s, 1000), 1e-3) for s in scores], color=colors)
        ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
        ax.set_yticks(range(len(judged)), [f["feature"] for f in judged], fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("drift against its threshold: distance / threshold, or log p / log 0.05 (right of 1: drifted;"
                      " green beyond it: significant, but moved by less than 0.1 standard deviations)", fontsize=8)
        ax.set_title("every device together (scope 'all'); the tables below break it down by scope", fontsize=9,
                     loc="left")
        fig.tight_layout()
        out["drift"] = _png(fig)
    return out


# The page: a string.Template (the HTML and its fixed text live in templates/report.html; the
# sections built here are escaped where they hold data).
PAGE = Template((Path(__file__).parent / "templates" / "report.html").read_text(encoding="utf-8"))
e = html.escape


def render(snap: Snapshot, alerts: list[Alert], window: str, command: str = "") -> str:
    alerts = sorted(alerts, key=lambda a: (SEVERITY_ORDER.get(a.severity, 3), a.rule, a.scope))
    plots = _plots(snap)
    ref = snap.reference
    return PAGE.substitute(
        model=e(snap.model), window=e(window), start=_when(snap.start), end=_when(snap.end),
        task=e(snap.task or "unknown"), records=f"{snap.total.signals.get('records', 0):,}",
        devices=snap.total.signals.get("system.devices_reporting", 0),
        no_reference="" if ref is not None else (
            "<div class='banner warn'>No reference stored for this model: drift, data quality and estimated "
            "accuracy need one (edgekit monitor reference).</div>"),
        alerts=_alerts(alerts), health=_health(snap, alerts),
        series=(f"<h2>Over time</h2><img alt='signals over time' src='data:image/png;base64,{plots['series']}'>"
                if "series" in plots else ""),
        drift=_drift(snap, alerts, plots), quality=_quality(snap), feedback=_feedback(snap),
        reference="" if not ref else (
            f"<p class='small'>Reference: {ref['rows']:,} rows from {e(str(ref['source']))}, stored "
            f"{_when(ref['created'])}; accuracy {format_value(ref['accuracy'], '{:.1%}')}; low-confidence line "
            f"{format_value(ref['low_confidence'], '{:.3f}')}.</p>"),
        generated=_when(time.time()), command=(": " + e(command)) if command else "")


def _alerts(alerts: list[Alert]) -> str:
    if not alerts:
        return "<div class='banner ok'>No alerts: every rule holds on every scope with enough data.</div>"
    critical = sum(a.severity == "critical" for a in alerts)
    items = [f"<li class='{e(a.severity)}'>{e(a.rule)}: <b>{e(a.scope)}</b>: {e(a.signal)} = {a.value:.4g} "
             f"{e(a.threshold)} over {e(a.window)} ({a.samples:,} samples). <span class='small'>{e(a.why)}</span></li>"
             for a in alerts]
    return (f"<div class='banner bad'>{len(alerts)} alert{'s' if len(alerts) != 1 else ''} firing"
            f"{f' ({critical} critical)' if critical else ''}</div><ul>" + "\n".join(items) + "</ul>")


def _health(snap: Snapshot, alerts: list[Alert]) -> str:
    """A row per scope, a column per signal; the cells behind an alert in red."""
    def hot(scope, signal: str) -> bool:
        """An alert on this column whose scope covers this row (a group alert marks each of its versions)."""
        return any(SHOWN_AS.get(a.signal, a.signal) == signal and (a.key or {}).items() <= scope.key.items()
                   and (a.key or not scope.key) for a in alerts)

    rows = ["<table><tr><th>scope</th>" + "".join(f"<th>{e(title)}</th>" for title, *_ in COLUMNS) + "</tr>"]
    for scope in list(snap.scopes) + [snap.total]:
        cells = []
        for _, signal, pattern, sample in COLUMNS:
            value = scope.signals.get(signal)
            text = format_value(value, pattern)
            if sample is not None and scope.signals.get(sample) is not None and value is not None:
                text += f" <span class='small'>({scope.signals[sample]:,})</span>"
            cls = "alert" if hot(scope, signal) else ("muted" if value is None else "")
            cells.append(f"<td class='{cls}'>{text}</td>")
        label = e(scope.name) if scope.key else "<b>all</b>"
        rows.append(f"<tr><td>{label}</td>{''.join(cells)}</tr>")
    return "\n".join(rows) + "</table>"


def _drift(snap: Snapshot, alerts: list[Alert], plots: dict) -> str:
    parts = [f"<img alt='drift per feature' src='data:image/png;base64,{plots['drift']}'>"] if "drift" in plots else []
    for scope in [snap.total] + [s for s in snap.scopes if s.details.get("drift", {}).get("drifted")]:
        drift = scope.details.get("drift")
        if not drift:
            continue
        verdict = ""
        if drift["drifted"]:
            # the heading must agree with the alerts above: say why a drifted scope has none
            alerted = any(a.signal.startswith("drift.") and (a.key or {}).items() <= scope.key.items() for a in alerts)
            verdict = " - dataset drift" + ("" if alerted else
                                            " over this report's window; no alert, because the rules judge their own "
                                            "windows and minimum rows (see 'edgekit monitor check')")
        parts.append(f"<h3>{e(scope.name)}: {format_value(drift['share'], '{:.0%}')} of {drift['judged']} features drifted"
                     f"{e(verdict)}</h3><table><tr><th>feature</th><th>method</th>"
                     "<th>score</th><th>threshold</th><th>drifted</th><th>PSI</th><th>reference mean</th>"
                     "<th>current mean</th><th>rows</th></tr>")
        for f in drift["features"][:40]:
            parts.append(f"<tr><td>{e(f['feature'])}</td><td>{e(f['method'])}</td><td>{format_value(f['score'], '{:.3g}')}</td>"
                         f"<td>{format_value(f['threshold'], '{:g}')}</td><td class='{'alert' if f['drifted'] else ''}'>"
                         f"{'yes' if f['drifted'] else 'no'}</td><td>{format_value(f['psi'], '{:.3f}')} ({e(f['psi_band'])})"
                         f"</td><td>{format_value(f['reference_mean'], '{:.4g}')}</td><td>{format_value(f['current_mean'], '{:.4g}')}"
                         f"</td><td>{f['rows']:,}</td></tr>")
        parts.append("</table>")
    return "\n".join(parts)


def _quality(snap: Snapshot) -> str:
    parts = []
    for scope in [snap.total] + list(snap.scopes):
        failing = [c for c in scope.details.get("quality", []) if c["failing_share"] > 0.01]
        if failing:
            parts.append(f"<h3>{e(scope.name)}</h3><table><tr><th>check</th><th>failing</th><th>rows</th>"
                         "<th>from</th></tr>")
            parts += [f"<tr><td>{e(c['check'])}</td><td class='alert'>{c['failing_share']:.1%}</td>"
                      f"<td>{c['rows']:,}</td><td>{e(c['source'])}</td></tr>" for c in failing[:20]]
            parts.append("</table>")
    return "\n".join(parts) or "<p>Every check holds (more than 99% of rows within bounds).</p>"


def _feedback(snap: Snapshot) -> str:
    parts = ["<table><tr><th>scope</th><th>feedback rate</th><th>accuracy (95% CI)</th><th>macro F1</th>"
             "<th>label coverage / p90 lag</th><th>outcomes</th><th>latency p50/p95/p99 ms</th><th>variants</th>"
             "<th>fallback reasons</th><th>silent devices</th><th>dropped / pending logs</th><th>max lag s</th></tr>"]
    for scope in list(snap.scopes) + [snap.total]:
        s, d = scope.signals, scope.details
        ci = (f"{format_value(s.get('feedback.accuracy'), '{:.1%}')} ({format_value(s.get('feedback.accuracy_low'), '{:.1%}')}-"
              f"{format_value(s.get('feedback.accuracy_high'), '{:.1%}')})")
        if s.get("feedback.window_s") and s["feedback.window_s"] > snap.end - snap.start + 1:
            ci += f" <span class='small'>over predictions of the last {_span(s['feedback.window_s'])}</span>"
        lat = "/".join(format_value(s.get(f"system.latency_p{q}_ms"), "{:.2f}") for q in (50, 95, 99))
        parts.append(
            f"<tr><td>{e(scope.name)}</td><td>{format_value(s.get('feedback.rate'), '{:.1%}')}</td><td>{ci}</td>"
            f"<td>{format_value(s.get('feedback.macro_f1'), '{:.3f}')}</td>"
            f"<td>{format_value(s.get('feedback.coverage'), '{:.1%}')} / "
            f"{_span(s['feedback.lag_p90_s']) if s.get('feedback.lag_p90_s') else '-'}</td><td>{e(_pairs(d.get('outcomes')))}</td>"
            f"<td>{lat}</td><td>{e(_pairs(d.get('variants')))}</td><td>{e(_pairs(d.get('fallback_reasons')))}</td>"
            f"<td>{e(', '.join(d.get('silent_devices', [])) or '-')}</td>"
            f"<td>{s.get('system.dropped', 0):,} / {s.get('system.pending', 0):,}</td>"
            f"<td>{format_value(s.get('system.lag_max_s'), '{:.0f}')}</td></tr>")
    return "\n".join(parts) + "</table>"


def _span(seconds: float) -> str:
    return f"{seconds / 86400:.3g}d" if seconds >= 86400 else f"{seconds / 3600:.3g}h"


def _pairs(counts: Optional[dict]) -> str:
    if not counts:
        return "-"
    return ", ".join(f"{k}: {v:,}" for k, v in list(counts.items())[:4])


class MonitorReport(Document):
    """One model's monitoring over one window: its signals and the alerts they raise.
    ``to_dict()`` is report.json."""

    snapshot: Snapshot
    window: str
    alerts: tuple[Alert, ...]

    def to_dict(self) -> dict:
        return {"snapshot": self.snapshot.to_dict(), "window": self.window, "alerts": [a.to_dict() for a in self.alerts]}


def write_report(snap: Snapshot, alerts: list[Alert], out: str | Path, window: str, command: str = "") -> Path:
    """report.html and report.json, written whole or not at all."""
    out = Path(out)
    report = MonitorReport(snap, window, tuple(alerts))
    with atomic_directory(out) as tmp:
        (tmp / "report.html").write_text(render(snap, alerts, window, command), encoding="utf-8")
        (tmp / "report.json").write_text(to_json(report.to_dict(), indent=1))
    return out / "report.html"
