"""Alert rules over the signals: thresholds, minimum sample sizes and cool-downs.

A rules file (TOML) holds ``[[rule]]`` tables::

    [[rule]]
    name = "feedback accuracy"
    signal = "feedback.accuracy_drop"   # any signal of edgekit.monitor.signals
    above = 5.0                         # or below = ...
    min_samples = 30                    # of the signal's own sample (labelled feedback here)
    by = "group"                        # version, group, device or model
    min_devices = 1                     # with by = "device": alert when this many devices of a
                                        # group fire (k of N), naming them
    window = "1d"
    cooldown = "6h"                     # a firing alert is notified again only after this
    severity = "critical"

Without a file the defaults below apply; each names the fault it is for. A rule never fires on
a scope with too small a sample: false alarms are a defect too.
"""

from __future__ import annotations

import difflib
import json
import re
import time
from pathlib import Path
from typing import Literal, Optional

from .._schema import Document, SchemaError, from_dict, to_dict
from ..errors import EdgekitError
from .catalog import CATALOG, sample_of

# Every signal a snapshot computes, from the catalog (a test holds the two together): a rule may
# read only these, and a typo ("nope.nope") is refused when the rules load instead of never firing.
SIGNALS = frozenset(CATALOG)


def parse_duration(text: str, what: str = "duration") -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(text))
    if not m:
        raise EdgekitError(f"bad {what} {text!r}", "use a number and a unit: 90s, 15m, 6h, 1d, 2w")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


class Rule(Document):
    name: str
    signal: str
    above: Optional[float] = None
    below: Optional[float] = None
    min_samples: int = 50
    by: Literal["version", "group", "device", "model"] = "group"
    min_devices: int = 1
    window: str = "1d"
    cooldown: str = "6h"
    severity: Literal["info", "warning", "critical"] = "warning"
    why: str = ""

    def __post_init__(self):
        if self.signal not in SIGNALS:
            close = difflib.get_close_matches(self.signal, sorted(SIGNALS), n=3)
            raise EdgekitError(f"rule {self.name!r}: unknown signal {self.signal!r}",
                               f"did you mean {', '.join(close)}?" if close else
                               "see the signals in 'edgekit monitor show --json'")
        if (self.above is None) == (self.below is None):
            raise EdgekitError(f"rule {self.name!r}: give exactly one of above or below")
        if self.min_devices < 1 or (self.min_devices > 1 and self.by != "device"):
            raise EdgekitError(f"rule {self.name!r}: min_devices = {self.min_devices} needs by = \"device\" and a "
                               "count of at least 1", "e.g. by = \"device\", min_devices = 2 (2 devices of a group)")
        parse_duration(self.window, f"rule {self.name!r} window")
        parse_duration(self.cooldown, f"rule {self.name!r} cooldown")

    def fires(self, value) -> bool:
        if value is None:
            return False
        return value > self.above if self.above is not None else value < self.below

    @property
    def threshold(self) -> str:
        return f"> {self.above:g}" if self.above is not None else f"< {self.below:g}"


DEFAULT_RULES = (
    Rule("feedback accuracy dropped", "feedback.accuracy_drop_certain", above=5.0, min_samples=30, severity="critical",
         why="users' labels say the model is wrong more often than on its reference (by more than the sample's "
             "95% interval allows)"),
    Rule("estimated accuracy dropped", "performance.estimated_drop", above=5.0, min_samples=100, severity="critical",
         why="calibrated confidences say accuracy fell (no labels needed)"),
    Rule("low-confidence predictions", "proxy.low_confidence_excess", above=3.0, min_samples=100,
         why="3x more predictions below the reference's 5th-percentile confidence than expected"),
    Rule("identical outputs for different inputs", "proxy.identical_output_share", above=0.5, min_samples=50,
         severity="critical", why="the model answers one thing to different inputs: a broken pre-processing step, "
                                  "a constant fed in place of the data, a degenerate release"),
    Rule("repeated inputs", "proxy.repeated_input_share", above=0.5, min_samples=50, severity="critical",
         why="the same input arrives again and again: a frozen camera or a stuck sensor"),
    Rule("non-finite outputs", "proxy.nonfinite_share", above=0.001, min_samples=1, severity="critical",
         why="the model returns NaN or infinity"),
    Rule("fallbacks", "proxy.fallback_share", above=0.2, min_samples=50,
         why="the preferred variant fails and the runtime falls back"),
    # One device's fault is diluted by its group (a frozen camera at 0.99 read 0.33 in a group of
    # three; one device falling back on every call never reached 0.2 in a group of five), so the
    # faults that live on one device are watched per device too, and the alert names it.
    Rule("identical outputs on one device", "proxy.identical_output_share", above=0.5, min_samples=50, by="device",
         severity="critical", why="this device's pre-processing is stuck; its group's share dilutes it"),
    Rule("repeated inputs on one device", "proxy.repeated_input_share", above=0.5, min_samples=50, by="device",
         severity="critical", why="this device sends the same input again and again (a frozen camera); its group's "
                                  "share dilutes it"),
    Rule("fallbacks on one device", "proxy.fallback_share", above=0.5, min_samples=50, by="device",
         why="the preferred variant fails on this device (its runtime, its hardware); its group hides it"),
    # Latency is judged against the device's own week before (devices differ); 50 records
    # measure a median to within a few percent.
    Rule("latency rose on one device", "system.latency_p50_ratio", above=1.5, min_samples=50, by="device",
         why="this device's median latency is 1.5x its own over the week before (thermal throttling, a "
             "slower variant, a busy CPU)"),
    Rule("predicted classes shifted", "proxy.class_shift", above=0.1, min_samples=200,
         why="the predicted classes moved away from the reference's by more than 10% of predictions, beyond "
             "what sampling explains (a new site, a season, or a model that started to favour a class)"),
    Rule("data quality", "quality.failing_share", above=0.1, min_samples=50,
         why="inputs break the reference's bounds or expectations"),
    # drift.dataset is the verdict the report prints ("dataset drift": at least half the features)
    Rule("data drift", "drift.dataset", above=0, min_samples=100,
         why="half or more of the features moved away from the reference (dataset drift)"),
    Rule("silent devices", "system.silent_devices", above=0, min_samples=0, by="group", window="7d",
         why="devices that sent this model's predictions have not been seen for a day"),
    # store health is the device's own count (not windowed): the 1-day device snapshot serves it
    Rule("dropped log records", "system.dropped", above=0, min_samples=0, by="device",
         why="this device's log store is full and drops records"),
    Rule("undeliverable log records", "system.dead_letter", above=0, min_samples=0, by="device",
         why="the collector refused records from this device, which keeps them aside (see its sync log)"),
)


def load_rules(path: Optional[str | Path]) -> tuple[Rule, ...]:
    if path is None:
        return DEFAULT_RULES
    from .._io import read_toml

    data = read_toml(path, "rules file")
    rules = data.get("rule")
    if not isinstance(rules, list) or not rules:
        raise EdgekitError(f"{path} holds no [[rule]] tables", "see 'edgekit monitor check --help' for the format")
    out = []
    for i, item in enumerate(rules):
        try:
            out.append(from_dict(Rule, item, f"rule[{i}]"))
        except SchemaError as exc:
            raise EdgekitError(f"{path}: {exc}") from None
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise EdgekitError(f"{path}: rule names must be unique", "rename the repeated one")
    return tuple(out)


class Alert(Document):
    rule: str
    severity: str
    model: str
    scope: str
    signal: str
    value: float
    threshold: str
    samples: int
    window: str
    why: str
    notify: bool  # False while the rule's cool-down for this scope runs
    key: dict = None  # the scope as dimension -> value ({} for the whole model)
    devices: tuple = ()  # a k-of-N rule: the devices that fire, with their values

    def line(self) -> str:
        value = f"{self.value:.4g}"
        quiet = "" if self.notify else " (cooling down: not notified again)"
        named = f" on {len(self.devices)} devices: " + ", ".join(f"{d} ({v:.3g})" for d, v in self.devices) \
            if self.devices else ""
        return (f"ALERT [{self.severity}] {self.rule}: {self.model} {self.scope}: {self.signal} = {value} "
                f"{self.threshold} over {self.window} ({self.samples} samples){named}{quiet}")

    def to_dict(self) -> dict:
        return to_dict(self)


def evaluate(db, model: str, rules: tuple[Rule, ...], now: Optional[float] = None, snapshots=None) -> list[Alert]:
    """Every rule over its own window and grouping; an alert whose rule's cool-down for its scope
    runs (it was notified recently: ``notified``) is marked notify=False. Looks only: nothing is
    recorded until the alerts are delivered. ``snapshots``: a cache (window, by) -> Snapshot."""
    from .signals import snapshot

    now = time.time() if now is None else now
    snapshots = {} if snapshots is None else snapshots
    needed: dict[tuple, set] = {}
    for rule in rules:  # one snapshot per window and grouping, computing only what its rules read
        key = (rule.window, () if rule.by == "model" else (rule.by,))
        needed.setdefault(key, set()).update({rule.signal, sample_of(rule.signal)})
    alerts = []
    for rule in rules:
        window = parse_duration(rule.window)
        by = () if rule.by == "model" else (rule.by,)
        snap = snapshots.get((rule.window, by))
        if snap is None:
            snap = snapshots[(rule.window, by)] = snapshot(db, model, now - window, now, by=by, series=False, now=now,
                                                           signals=needed[(rule.window, by)])
        found = []
        for scope in (snap.scopes if by else (snap.total,)):
            value = scope.signals.get(rule.signal)
            samples = scope.signals.get(sample_of(rule.signal)) or 0
            if samples >= rule.min_samples and rule.fires(value):
                found.append(Alert(rule.name, rule.severity, model, scope.name if by else "all", rule.signal,
                                   float(value), rule.threshold, int(samples), rule.window, rule.why, True,
                                   dict(scope.key) if by else {}))
        alerts += _k_of_n(db, rule, found) if rule.min_devices > 1 else found
    return _cooling(db, alerts, {r.name: parse_duration(r.cooldown) for r in rules}, now)


def _k_of_n(db, rule: Rule, found: list[Alert]) -> list[Alert]:
    """Device alerts of a k-of-N rule as one alert per group where at least k devices fire: one
    device off is noise for this rule, several in one place are a fault of that place."""
    with db.read() as tx:
        groups = dict(tx.all("SELECT name, grp FROM devices"))
        sizes = dict(tx.all("SELECT grp, COUNT(*) FROM devices WHERE revoked = 0 GROUP BY grp"))
    by_group: dict = {}
    for a in found:
        by_group.setdefault(groups.get(a.key["device"], ""), []).append(a)
    out = []
    for group, firing in sorted(by_group.items()):
        if len(firing) < rule.min_devices:
            continue
        firing.sort(key=lambda a: -a.value if rule.above is not None else a.value)
        out.append(Alert(rule.name, rule.severity, firing[0].model, f"group={group or '-'}", rule.signal,
                         firing[0].value, f"{rule.threshold} on >= {rule.min_devices} of {sizes.get(group, '?')} devices",
                         sum(a.samples for a in firing), rule.window, rule.why, True, {"group": group},
                         tuple((a.key["device"], a.value) for a in firing)))
    return out


def _cooling(db, alerts: list[Alert], cooldowns: dict[str, float], now: float) -> list[Alert]:
    out = []
    with db.read() as tx:
        for a in alerts:
            row = tx.one("SELECT fired FROM monitor_alerts WHERE rule = ? AND scope = ?", (a.rule, _scope_key(a)))
            cooling = row is not None and now - row[0] < cooldowns[a.rule]
            out.append(Alert(**{**a.to_dict(), "notify": False}) if cooling else a)
    return out


def _scope_key(alert: Alert) -> str:
    return f"{alert.model}|{alert.scope}"


def notified(db, alerts: list[Alert], now: Optional[float] = None) -> None:
    """Start the cool-down of each alert that was delivered (printed, or posted to a webhook that
    answered): one that failed to reach anybody must be tried again next time."""
    now = time.time() if now is None else now
    with db.connect() as tx:
        for a in alerts:
            if a.notify:
                tx.execute("DELETE FROM monitor_alerts WHERE rule = ? AND scope = ?", (a.rule, _scope_key(a)))
                tx.execute("INSERT INTO monitor_alerts (rule, scope, fired) VALUES (?, ?, ?)",
                           (a.rule, _scope_key(a), now))


def check_webhook(url: str) -> str:
    """An http(s) URL with a host, or an error that says so (urllib would open file:// too)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EdgekitError(f"--webhook {url[:200]!r} is not an http(s) URL", "e.g. https://hooks.example/edgekit")
    return url


def post_webhook(url: str, alerts: list[Alert], timeout_s: float = 10.0) -> None:
    """POST the alerts to be notified as JSON ({"alerts": [...]}, Alertmanager-like fields)."""
    import urllib.error
    import urllib.request

    check_webhook(url)
    body = json.dumps({"alerts": [a.to_dict() | {"text": a.line()} for a in alerts if a.notify]}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise EdgekitError(f"the webhook {url} failed: {getattr(exc, 'reason', exc)}",
                           "check the URL; the alerts were printed, and the next check notifies them again") from None
