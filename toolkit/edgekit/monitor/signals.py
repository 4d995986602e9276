"""The six signals of one model over a time window, per scope (version, device group, device).

Everything is aggregated by the database: the record columns the collector derived on arrival
(feedback joins, proxies, system), summed per hour in the rollups (edgekit.monitor.rollups) where
the hours are rolled up, and the feature sketches (drift, quantiles, data quality, estimated
accuracy). Python sees one row per scope and bucket, never a record, except for the
optional expectation suite over raw logged inputs, which streams a bounded sample.

Signals, most valuable first, in one flat dict per scope (None where there is nothing to say):
  feedback.*    outcomes and labels users sent back: rate, negative share, accuracy with its
                Wilson interval, macro F1, drop from the reference accuracy; label coverage and
                lag. Labels are counted at their prediction's time and only if given before the
                window's end; a scope with too few in its window is judged over earlier windows'
                predictions too (up to a week), and feedback.window_s says over how long
  performance.* accuracy estimated from calibrated confidences (no labels needed) with its 95%
                interval, and its drop from the reference
  proxy.*       low-confidence share (expected: 5%), entropy, top-class share, a shift of the
                predicted classes from the reference's, identical outputs for different inputs
                and repeated inputs (per device and hour), non-finite outputs, fallbacks, cache hits
  quality.*     share of rows breaking the data bounds (summaries) or the expectation suite (raw)
  drift.*       share of features whose distribution moved, dataset drift
  system.*      latency quantiles and their ratio to the scope's own week before the window,
                devices (silent ones), dropped and pending log records, lag
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .._schema import Document, field
from ..errors import EdgekitError
from ..names import LABEL_STORE
from .derive import HOUR
from .drift import class_shift, dataset_drift
from .reference import Reference, load_reference
from .rollups import NO_THRESHOLD, SUMS, record_counts, record_sums
from .sketch import Histogram

SCHEMA_VERSION = 1
DIMENSIONS = ("version", "group", "device")
NEGATIVE_OUTCOMES = frozenset({"corrected", "rejected", "wrong", "incorrect", "bad", "negative", "thumbs_down",
                               "dislike", "false_positive", "false_negative"})
SILENT_AFTER_S = 24 * 3600
RAW_SUITE_MAX_ROWS = 20000
FEEDBACK_MIN = 30  # labels a scope needs before its feedback window stops reaching back
FEEDBACK_MAX_SPAN_S = 7 * 86400
# Label lag is counted in these bands (SQL CASE, portable): its quantiles are read as band edges.
LAG_EDGES_S = (3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 3 * 86400, 5 * 86400, 7 * 86400, 14 * 86400)
LATENCY_BASELINE_S = 7 * 86400  # a scope's latency is compared with its own week before the window
LATENCY_BASELINE_MIN = 50
SERIES_POINTS = 48  # at most this many points per scope in a series over time
CLASS_SHIFT_P = 0.001  # a predicted-class shift counts only when sampling noise cannot explain it


class Scope(Document):
    """One scope of a snapshot (a version, group or device, or {} for all): its signals."""

    key: dict  # dimension -> value; {} for the model as a whole
    signals: dict
    details: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return ", ".join(f"{k}={v or '-'}" for k, v in self.key.items()) or "all"


class Snapshot(Document):
    """Every signal of one model over one window, overall and per scope."""

    model: str
    start: float
    end: float
    by: tuple[str, ...]
    task: Optional[str]
    reference: Optional[dict]
    total: Scope
    scopes: tuple[Scope, ...]
    series: dict  # signal -> {scope name: [[time, value], ...]}
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        def scope(s: Scope) -> dict:
            return {"key": s.key, "name": s.name, "signals": s.signals, "details": s.details}

        return {"schema_version": self.schema_version, "model": self.model, "start": self.start, "end": self.end,
                "by": list(self.by), "task": self.task, "reference": self.reference, "total": scope(self.total),
                "scopes": [scope(s) for s in self.scopes], "series": self.series}


# -- SQL helpers -------------------------------------------------------------------------------------

_COLUMN = {"version": "{t}.version", "group": "d.grp", "device": "{t}.device"}


def _dims(by: tuple[str, ...], table: str) -> str:
    return "".join(_COLUMN[d].format(t=table) + ", " for d in by)


def _wilson(k: int, n: int) -> tuple[Optional[float], Optional[float]]:
    if n <= 0:
        return None, None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def _label_class(text: Optional[str]) -> Optional[int]:
    """Feedback labels are stored as JSON: 3 and "3" are both class 3."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value) if float(value) == int(float(value)) else None
    except (TypeError, ValueError):
        return None


def _macro_f1(pairs: Counter) -> Optional[float]:
    """pairs: (label, predicted) -> count."""
    classes = {c for pair in pairs for c in pair if c is not None}
    if not classes:
        return None
    f1s = []
    for c in classes:
        tp = pairs.get((c, c), 0)
        fp = sum(n for (t, p), n in pairs.items() if p == c and t != c)
        fn = sum(n for (t, p), n in pairs.items() if t == c and p != c)
        f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
    return float(np.mean(f1s))


def _ratio(a, b) -> Optional[float]:
    return float(a) / float(b) if b else None


# -- the snapshot ------------------------------------------------------------------------------------

def drift_features(reference: Reference) -> list[str]:
    """What dataset drift is judged on: the inputs' features and the outputs that matter for the task."""
    outputs = {"classification": ("out.class", "out.confidence", "out.entropy"),
               "embedding": ("out.norm", "out.proj0", "out.proj1"),
               "regression": ("out.value",)}[reference.task]
    inputs = [f for f in reference.histograms if f.startswith("in.") and not f.endswith(".nonfinite")]
    return sorted(inputs) + [f for f in outputs if f in reference.histograms]


def _needs(signals: Optional[set]) -> tuple[bool, bool, bool, bool]:
    """(feedback, sketches, raw suite, latency baseline) for the signals asked for (None: all of
    them). Alert rules ask for a few; a 7-day window for silent devices should not recompute drift."""
    if signals is None:
        return True, True, True, True
    sketch = any(s.split(".")[0] in ("performance", "drift", "quality") or s.startswith("system.latency")
                 or s.startswith(("proxy.top_class_share", "proxy.class_shift")) for s in signals)
    return (any(s.startswith("feedback.") for s in signals), sketch, any(s.startswith("quality.") for s in signals),
            any(s.startswith("system.latency") and s.endswith("_ratio") for s in signals))


def _sketch_features(signals: Optional[set]) -> Optional[tuple[str, ...]]:
    """The sketch features the signals asked for read (None: all of them): a per-device latency
    rule must not sum every feature of every device, nor judge each device's drift."""
    if signals is None or any(s.split(".")[0] in ("drift", "quality") for s in signals):
        return None
    wanted = {f for s in signals for prefix, f in (("performance.", "out.confidence"), ("system.latency", "sys.latency_ms"),
                                                   ("proxy.top_class_share", "out.class"),
                                                   ("proxy.class_shift", "out.class")) if s.startswith(prefix)}
    return tuple(sorted(wanted))


def snapshot(db, model: str, start: float, end: float, by: tuple[str, ...] = ("version", "group"),
             reference: Optional[Reference] = None, raw_suite: bool = True, series: bool = True,
             now: Optional[float] = None, signals: Optional[set] = None) -> Snapshot:
    """``signals``: the ones needed (None: all); the others may be left None."""
    unknown = [d for d in by if d not in DIMENSIONS]
    if unknown:
        raise EdgekitError(f"cannot group by {unknown[0]!r}", f"use {', '.join(DIMENSIONS)}")
    reference = reference or load_reference(db, model)
    now = time.time() if now is None else now
    need_feedback, need_sketches, need_raw, need_baseline = _needs(signals)
    raw_suite = raw_suite and need_raw
    with db.read() as tx:
        if not tx.one("SELECT 1 FROM sketches WHERE model = ? LIMIT 1", (model,)) and \
                not tx.one("SELECT 1 FROM records WHERE model = ? LIMIT 1", (model,)):
            raise EdgekitError(f"the collector holds no predictions of model {model!r}",
                               "see the models it holds with: edgekit collector stats")
        groups = dict(tx.all("SELECT name, grp FROM devices"))
        # Records are aggregated per (version, device) by the database, then folded into scopes
        # here: one scan serves every scope and the total, and devices are counted exactly.
        parts = _records(tx, model, start, end, reference)
        feedback = _feedback(tx, model, start, end) if need_feedback else {}
        baseline = {b: _latency_baseline(tx, model, start, b) for b in {by, ()}} if need_baseline else {(): {}, by: {}}
        fallbacks = _per_device(record_counts(tx, model, start, end, "fallbacks"), _reasons)
        variants = _per_device(record_counts(tx, model, start, end, "variant"), lambda v: [v or "-"])
        features = _sketch_features(signals)
        sketches = _sketches(tx, model, start, end, by, features, series_step(start, end) if series else None) \
            if need_sketches else {}
        devices = _devices(tx, model, now)

    def scope_of(version, device) -> tuple:
        values = {"version": version or "", "group": groups.get(device, ""), "device": device}
        return tuple(values[d] for d in by)

    records = _fold(parts, scope_of)
    keys = set(records) | set(sketches) | {scope_of(*k) for k in feedback}
    span, steps = _feedback_steps(start, end)
    if by and set(by) <= {"group", "device"}:  # a group whose devices all went silent is still a scope
        keys |= {tuple(d[k] for k in by) for d in devices}
    keys = sorted(keys, key=lambda k: tuple(str(x) for x in k))
    scopes = []
    for key in keys:
        def mine(per_device: dict) -> Counter:
            out: Counter = Counter()
            for k, counts in per_device.items():
                if scope_of(*k) == key:
                    out.update(counts)
            return out

        hists = _merge_hours(sketches.get(key, {}))
        judged = _judged_feedback([v for k, v in feedback.items() if scope_of(*k) == key], span, steps)
        signals_, details = _signals(reference, records.get(key), judged, hists, mine(fallbacks),
                                     mine(variants), _device_part(devices, by, key), baseline[by].get(key),
                                     judge_drift=features is None)
        scopes.append(Scope(dict(zip(by, key)), signals_, details))
    total = _total(db, model, start, end, reference, _fold(parts, lambda v, d: ()).get(()),
                   _judged_feedback(list(feedback.values()), span, steps), sketches, fallbacks, variants, devices,
                   raw_suite, baseline[()].get(()), judge_drift=features is None)
    if raw_suite and reference is not None and reference.suite:
        for scope in scopes:
            _raw_quality(db, model, start, end, reference, scope)
    return Snapshot(model, start, end, by, reference.task if reference else None, _ref_summary(reference), total,
                    tuple(scopes), _series(reference, sketches, by) if series else {})


def _ref_summary(reference: Optional[Reference]) -> Optional[dict]:
    if reference is None:
        return None
    return {"rows": reference.rows, "task": reference.task, "accuracy": reference.accuracy,
            "low_confidence": reference.low_confidence, "source": reference.source, "created": reference.created}


def _records(tx, model, start, end, reference) -> dict:
    """(version, device) -> sums, from the hourly rollups where they are clean and the records'
    covering index (records_monitor) elsewhere."""
    low = reference.low_confidence if reference and reference.low_confidence is not None else NO_THRESHOLD
    return {(r[0], r[1]): dict(zip(SUMS + ("lag_max", "last"), r[2:])) for r in record_sums(tx, model, start, end, low)}


def _fold(parts: dict, scope_of) -> dict:
    """Per-device sums into per-scope aggregates. Identical outputs are counted per device and
    hour (a stuck sensor repeats itself within the hour; two devices shown the same scene do not
    make a fault, and per hour the counts add up, so the rollups hold them exactly)."""
    out: dict = {}
    for (version, device), p in parts.items():
        agg = out.setdefault(scope_of(version, device), {k: 0 for k in SUMS} | {"lag_max": None, "last": None,
                                                                                   "device_set": set()})
        for k in SUMS:
            agg[k] += p[k] or 0
        for k in ("lag_max", "last"):
            if p[k] is not None:
                agg[k] = p[k] if agg[k] is None else max(agg[k], p[k])
        agg["device_set"].add(device)
    for agg in out.values():
        agg["devices"] = len(agg.pop("device_set"))
        agg["entropy"] = agg["entropy_sum"] / agg["with_entropy"] if agg["with_entropy"] else None
        agg["lag_mean"] = agg["lag_sum"] / agg["records"] if agg["records"] else None
    return out


def _per_device(rows, split) -> dict:
    """(version, device) -> Counter of what ``split`` makes of the third column."""
    out: dict = defaultdict(Counter)
    for version, device, value, count in rows:
        for item in split(value):
            out[(version, device)][item] += count
    return out


def _reasons(text) -> list[str]:
    try:
        reasons = json.loads(text) or []
    except (TypeError, ValueError):
        reasons = ["unreadable"]
    return [str(r).split("\n")[0][:120] for r in reasons]


# The latest feedback on a prediction (ties: the later feedback row), found through the
# (device, request_id) index: a window function over the whole feedback table would be
# materialised without an index and joined row by row (a minute at 100,000 records on SQLite).
# Labels imported from a curation queue are left out: curation picks the hardest predictions, so
# their accuracy is not the fleet's (users' feedback is the signal; the queue is a training set).
LATEST_FEEDBACK = (f"f.store <> '{LABEL_STORE}' AND NOT EXISTS (SELECT 1 FROM feedback g WHERE g.device = f.device "
                   f"AND g.request_id = f.request_id AND g.store <> '{LABEL_STORE}' "
                   "AND (g.time > f.time OR (g.time = f.time AND g.feedback_id > f.feedback_id)))")


def _feedback_steps(start: float, end: float) -> tuple[float, int]:
    """(window length, how many windows back feedback may reach)."""
    span = max(end - start, 1.0)
    return span, max(1, math.ceil(FEEDBACK_MAX_SPAN_S / span))


def _feedback(tx, model, start, end) -> dict:
    """(version, device) -> age -> {"pairs": Counter of (label, outcome, predicted class),
    "lags": Counter of lag band, "lag_sum": seconds}; age: how many windows before this one the
    prediction was made (0: inside it). A label is counted at its prediction's time and only if
    given before the window's end (a past window is judged on what was known then). Driven from
    the feedback given in the span (feedback comes after its prediction): far fewer rows than the
    span's predictions."""
    span, steps = _feedback_steps(start, end)
    first = end - steps * span
    age = tx.int_floor("(? - r.time) / ?")
    lag = "CASE " + " ".join(f"WHEN f.time - r.time < {e} THEN {i}" for i, e in enumerate(LAG_EDGES_S)) + \
        f" ELSE {len(LAG_EDGES_S)} END"
    rows = tx.all(
        f"SELECT r.version, r.device, {age}, f.label, f.outcome, r.top_class, {lag}, COUNT(*), SUM(f.time - r.time) "
        # CROSS JOIN: SQLite then keeps this join order (feedback first); PostgreSQL plans it freely
        "FROM feedback f CROSS JOIN records r "
        "WHERE r.device = f.device AND r.request_id = f.request_id AND f.time >= ? AND f.time < ? AND r.model = ? "
        f"AND r.time >= ? AND r.time < ? AND {LATEST_FEEDBACK} "
        "GROUP BY r.version, r.device, 3, f.label, f.outcome, r.top_class, 7",
        (end, span, first, end, model, first, end))
    out: dict = defaultdict(lambda: defaultdict(_part))
    for version, device, age_, label, outcome, predicted, band, count, lag_sum in rows:
        part = out[(version, device)][min(max(int(age_), 0), steps - 1)]
        part["pairs"][(label, outcome, predicted)] += count
        part["lags"][int(band)] += count
        part["lag_sum"] += float(lag_sum or 0.0)
    return out


def _part() -> dict:
    return {"pairs": Counter(), "lags": Counter(), "lag_sum": 0.0}


def _merge(into: dict, part: dict) -> None:
    into["pairs"].update(part["pairs"])
    into["lags"].update(part["lags"])
    into["lag_sum"] += part["lag_sum"]


@dataclass(frozen=True)
class Feedback:
    """A scope's feedback as judged: over its window, reaching back while labels are too few."""

    pairs: Counter  # (label, outcome, predicted class) -> count, over the span judged
    window: Counter  # the same for the window's own predictions
    lags: Counter  # lag band -> count, over the span judged
    lag_sum: float
    span_s: float


def _judged_feedback(parts: list[dict], span: float, steps: int) -> Feedback:
    """Windows are added oldest-last until FEEDBACK_MIN labels (outcomes where nobody labels) are
    in: with labels arriving 36 h late a 1-day window holds none, and the day before holds them."""
    ages: dict = defaultdict(_part)
    for per_age in parts:
        for age, part in per_age.items():
            _merge(ages[age], part)
    labels = any(label is not None for part in ages.values() for (label, _, _) in part["pairs"])
    judged, used = _part(), 1
    for age in range(steps):
        if age in ages:
            _merge(judged, ages[age])
        used = age + 1
        counted = sum(n for (label, outcome, _), n in judged["pairs"].items()
                      if (label if labels else outcome) is not None)
        if counted >= FEEDBACK_MIN or not any(a > age for a in ages):
            break
    return Feedback(judged["pairs"], Counter(ages[0]["pairs"]) if 0 in ages else Counter(), judged["lags"],
                    judged["lag_sum"], used * span)


def _lag_quantile(lags: Counter, q: float) -> Optional[float]:
    """The upper edge of the lag band holding quantile q (bands past the last edge: that edge)."""
    total = sum(lags.values())
    if not total:
        return None
    seen = 0
    for band in sorted(lags):
        seen += lags[band]
        if seen >= q * total:
            return float(LAG_EDGES_S[min(band, len(LAG_EDGES_S) - 1)])
    return float(LAG_EDGES_S[-1])


def _latency_baseline(tx, model, start, by) -> dict:
    """scope key -> latency Histogram over the LATENCY_BASELINE_S of whole hours before the window:
    a device's latency is judged against its own past, since devices differ (a Pi 4 is not a Pi 5)."""
    last = int(start // HOUR) * HOUR
    n = len(by)
    out: dict = {}
    for r in tx.all(f"SELECT {_dims(by, 's')}s.bucket, SUM(s.n) FROM sketches s JOIN devices d ON d.name = s.device "
                    "WHERE s.model = ? AND s.feature = 'sys.latency_ms' AND s.hour >= ? AND s.hour < ? "
                    f"GROUP BY {_dims(by, 's')}s.bucket", (model, last - LATENCY_BASELINE_S, last)):
        key = tuple(r[:n])
        hist = out.get(key)
        if hist is None:
            hist = out[key] = Histogram("sys.latency_ms")
        hist.add(r[n], r[n + 1])
    return out


def series_step(start: float, end: float) -> int:
    """Seconds per point of a series: an hour, or whole hours enough to keep SERIES_POINTS points
    (a week's report judges drift 42 times per scope, not 168: most of its time went there)."""
    hours = math.ceil(end / HOUR) - int(start // HOUR)
    return HOUR * max(1, math.ceil(hours / SERIES_POINTS))


def _sketches(tx, model, start, end, by, features: Optional[tuple[str, ...]] = None,
              step: Optional[int] = HOUR) -> dict:
    """scope key -> time -> feature -> Histogram (of ``features`` only, when given), one time per
    ``step`` seconds from the window's first hour (None: one for the whole window, when no series
    is drawn: the database adds the hours up)."""
    first, last = int(start // HOUR) * HOUR, math.ceil(end / HOUR) * HOUR
    out: dict = defaultdict(lambda: defaultdict(dict))
    if features == ():
        return out
    n = len(by)
    step = int(step or max(last - first, HOUR))
    when = "s.hour" if step == HOUR else f"{first} + {tx.int_floor(f'(s.hour - {first}) / {step}')} * {step}"
    only = f"AND s.feature IN ({', '.join('?' * len(features))}) " if features is not None else ""
    for chunk in tx.stream(f"SELECT {_dims(by, 's')}{when}, s.feature, s.bucket, SUM(s.n) FROM sketches s "
                           f"JOIN devices d ON d.name = s.device WHERE s.model = ? AND s.hour >= ? AND s.hour < ? {only}"
                           f"GROUP BY {_dims(by, 's')}{when}, s.feature, s.bucket",
                           (model, first, last, *(features or ())), 20000):
        for r in chunk:
            hours = out[tuple(r[:n])]
            feature = r[n + 1]
            hist = hours[int(r[n])].get(feature)
            if hist is None:
                hist = hours[int(r[n])][feature] = Histogram(feature)
            hist.add(r[n + 2], r[n + 3])
    return out


def _merge_hours(hours: dict) -> dict[str, Histogram]:
    merged: dict[str, Histogram] = {}
    for features in hours.values():
        for name, hist in features.items():
            target = merged.setdefault(name, Histogram(name))
            for b, c in hist.counts.items():
                target.add(b, c)
    return merged


def _devices(tx, model, now) -> list[dict]:
    """The devices that ever sent this model's predictions, with their group and health."""
    rows = tx.all("SELECT d.name, d.grp, d.last_seen, d.dropped, d.pending, d.oldest_pending, d.dead_letter "
                  "FROM devices d WHERE d.revoked = 0 AND d.name IN (SELECT device FROM model_devices WHERE model = ?)",
                  (model,))
    return [{"device": r[0], "group": r[1], "last_seen": r[2], "dropped": r[3] or 0, "pending": r[4] or 0,
             "oldest_pending": r[5], "dead_letter": r[6] or 0,
             "silent": r[2] is None or now - r[2] > SILENT_AFTER_S} for r in rows]


def _device_part(devices: list[dict], by, key) -> list[dict]:
    """The devices inside a scope (versions do not split devices: each appears under every version)."""
    wanted = {d: v for d, v in zip(by, key) if d in ("group", "device")}
    return [d for d in devices if all(d[k] == v for k, v in wanted.items())]


def _signals(reference, rec, judged: Feedback, hists: dict[str, Histogram], fallbacks: Counter, variants: Counter,
             devices: list[dict], latency_baseline: Optional[Histogram] = None,
             judge_drift: bool = True) -> tuple[dict, dict]:
    s: dict = {}
    details: dict = {}
    records = rec["records"] if rec else 0
    s["records"] = records
    s["rows"] = rec["rows"] if rec else 0
    # 1. outcomes and feedback
    fb = judged.pairs
    given = sum(fb.values())
    labelled = correct = negative = 0
    pairs: Counter = Counter()
    outcomes: Counter = Counter()
    for (label, outcome, predicted), count in fb.items():
        if outcome:
            outcomes[outcome] += count
            negative += count if outcome.lower() in NEGATIVE_OUTCOMES else 0
        truth = _label_class(label)
        if truth is not None and predicted is not None:
            labelled += count
            correct += count if truth == predicted else 0
            pairs[(truth, predicted)] += count
    s["feedback.count"] = given
    s["feedback.rate"] = _ratio(sum(judged.window.values()), records)
    s["feedback.window_s"] = judged.span_s
    s["feedback.coverage"] = _ratio(sum(n for (label, _, _), n in judged.window.items() if label is not None), records)
    lagged = sum(judged.lags.values())
    s["feedback.lag_mean_s"] = judged.lag_sum / lagged if lagged else None
    s["feedback.lag_p90_s"] = _lag_quantile(judged.lags, 0.9)
    s["feedback.outcomes"] = sum(outcomes.values())
    s["feedback.negative_share"] = _ratio(negative, sum(outcomes.values()))
    s["feedback.labelled"] = labelled
    s["feedback.accuracy"] = _ratio(correct, labelled)
    s["feedback.accuracy_low"], s["feedback.accuracy_high"] = _wilson(correct, labelled)
    s["feedback.macro_f1"] = _macro_f1(pairs)
    ref_acc = reference.accuracy if reference else None
    s["feedback.accuracy_drop"] = (100 * (ref_acc - s["feedback.accuracy"])
                                   if ref_acc is not None and s["feedback.accuracy"] is not None else None)
    # The drop that the sample supports: from the top of its 95% interval. Thirty labels cannot
    # show a 3-point drop, and this says so instead of raising a false alarm.
    s["feedback.accuracy_drop_certain"] = (100 * (ref_acc - s["feedback.accuracy_high"])
                                           if ref_acc is not None and s["feedback.accuracy_high"] is not None else None)
    details["outcomes"] = dict(outcomes.most_common(10))
    # 2. performance without labels (CBPE)
    conf = hists.get("out.confidence")
    s["performance.reference_accuracy"] = ref_acc
    s["performance.estimated_accuracy"] = s["performance.estimated_low"] = s["performance.estimated_high"] = None
    s["performance.estimated_drop"] = None
    if conf is not None and conf.total and reference is not None and reference.calibration is not None:
        values, counts = conf.arrays()
        p = reference.calibration.expected(values)
        n = counts.sum()
        est = float((p * counts).sum() / n)
        sd = math.sqrt(float((p * (1 - p) * counts).sum())) / n
        s["performance.estimated_accuracy"] = est
        s["performance.estimated_low"], s["performance.estimated_high"] = max(0.0, est - 1.96 * sd), min(1.0, est + 1.96 * sd)
        s["performance.estimated_drop"] = 100 * (ref_acc - est) if ref_acc is not None else None
    # 3. proxies
    s["proxy.low_confidence_share"] = _ratio(rec["low_confidence"], rec["low_judged"]) if rec and \
        reference is not None and reference.low_confidence is not None else None
    s["proxy.low_confidence_expected"] = 0.05 if s["proxy.low_confidence_share"] is not None else None
    s["proxy.low_confidence_excess"] = (s["proxy.low_confidence_share"] / 0.05
                                        if s["proxy.low_confidence_share"] is not None else None)
    s["proxy.entropy_mean"] = float(rec["entropy"]) if rec and rec["entropy"] is not None else None
    classes = hists.get("out.class")
    if classes is not None and classes.total and (reference is None or reference.task == "classification"):
        top = max(classes.counts.items(), key=lambda kv: kv[1])
        s["proxy.top_class_share"] = top[1] / classes.total
        details["classes"] = {str(k): v for k, v in sorted(classes.counts.items())}
        ref_classes = reference.histogram("out.class") if reference else None
        s["proxy.top_class_share_reference"] = (max(ref_classes.counts.values()) / ref_classes.total
                                                if ref_classes and ref_classes.total else None)
        # A prior shift (two classes at 25% instead of 10%) moves the dataset-drift share little;
        # the predicted classes are judged on their own, with the reference as a sample too.
        shift, p = class_shift(ref_classes, classes) if ref_classes and ref_classes.total else (None, None)
        s["proxy.class_shift_p"] = p
        s["proxy.class_shift"] = None if p is None else shift if p < CLASS_SHIFT_P else 0.0
    else:
        s["proxy.top_class_share"] = s["proxy.top_class_share_reference"] = None
        s["proxy.class_shift"] = s["proxy.class_shift_p"] = None
    different = (rec["distinct_inputs"] + rec["unhashed_inputs"]) if rec else 0
    s["proxy.identical_output_share"] = max(0.0, 1 - rec["distinct_outputs"] / different) if different else None
    # the same input over and over (a frozen camera): a data fault the outputs alone cannot tell
    # from a model that answers one thing to everything
    s["proxy.repeated_input_share"] = (1 - rec["distinct_inputs"] / rec["hashed_inputs"]
                                         if rec and rec["hashed_inputs"] else None)
    s["proxy.nonfinite_share"] = _ratio(rec["nonfinite"], records) if rec else None
    s["proxy.fallback_share"] = _ratio(rec["fallbacks"], records) if rec else None
    s["proxy.cached_share"] = _ratio(rec["cached"], records) if rec else None
    details["fallback_reasons"] = dict(fallbacks.most_common(10))
    details["variants"] = dict(variants.most_common())
    # 4. data quality over summaries (the raw-input suite is added by _raw_quality)
    checks = []
    if reference is not None:
        for feature, (lo, hi) in sorted(reference.bounds.items()):
            hist = hists.get(feature)
            if hist is not None and hist.total:
                share = hist.share_outside(lo, hi)
                checks.append({"check": f"{feature} within [{lo:.4g}, {hi:.4g}]", "failing_share": share,
                               "rows": hist.total, "source": "summaries"})
    checks.sort(key=lambda c: -c["failing_share"])
    details["quality"] = checks
    s["quality.rows"] = max((c["rows"] for c in checks), default=0)
    s["quality.failing_share"] = max((c["failing_share"] for c in checks), default=None)
    s["quality.failed_checks"] = sum(c["failing_share"] > 0.01 for c in checks) if checks else None
    # 5. drift (not where only some features were read: a share of two features is no dataset drift)
    if reference is not None and judge_drift:
        ref_h = {f: reference.histogram(f) for f in reference.histograms}
        drift = dataset_drift(ref_h, hists, drift_features(reference))
        details["drift"] = drift.to_dict()
        s["drift.share"], s["drift.dataset"], s["drift.judged"] = drift.share, int(drift.drifted), drift.judged
        s["drift.rows"] = max((f.rows for f in drift.features), default=0)
    else:
        s["drift.share"] = s["drift.dataset"] = s["drift.judged"] = None
        s["drift.rows"] = 0
    # 6. system
    latency = hists.get("sys.latency_ms")
    for q in (50, 95, 99):
        s[f"system.latency_p{q}_ms"] = latency.quantile(q / 100) if latency is not None and latency.total else None
    for q in (50, 95):
        before = latency_baseline.quantile(q / 100) if latency_baseline is not None and \
            latency_baseline.total >= LATENCY_BASELINE_MIN else None
        now_ = s[f"system.latency_p{q}_ms"]
        s[f"system.latency_p{q}_ratio"] = now_ / before if now_ is not None and before else None
    s["system.devices"] = len(devices)
    s["system.devices_reporting"] = rec["devices"] if rec else 0
    s["system.silent_devices"] = sum(d["silent"] for d in devices)
    s["system.dropped"] = sum(d["dropped"] for d in devices)
    s["system.pending"] = sum(d["pending"] for d in devices)
    s["system.dead_letter"] = sum(d["dead_letter"] for d in devices)
    s["system.lag_max_s"] = float(rec["lag_max"]) if rec and rec["lag_max"] is not None else None
    s["system.lag_mean_s"] = float(rec["lag_mean"]) if rec and rec["lag_mean"] is not None else None
    s["system.last_record"] = rec["last"] if rec else None
    details["silent_devices"] = sorted(d["device"] for d in devices if d["silent"])
    return s, details


def _total(db, model, start, end, reference, rec, judged: Feedback, sketches, fallbacks, variants, devices,
           raw_suite, latency_baseline, judge_drift: bool = True) -> Scope:
    """The whole model: the per-device parts added up (histograms and counts add exactly)."""
    hists: dict[str, Histogram] = {}
    for hours in sketches.values():
        for name, hist in _merge_hours(hours).items():
            target = hists.setdefault(name, Histogram(name))
            for b, c in hist.counts.items():
                target.add(b, c)
    fbk: Counter = Counter()
    for part in fallbacks.values():
        fbk.update(part)
    var: Counter = Counter()
    for part in variants.values():
        var.update(part)
    signals, details = _signals(reference, rec, judged, hists, fbk, var, devices, latency_baseline, judge_drift)
    scope = Scope({}, signals, details)
    if raw_suite and reference is not None and reference.suite:
        _raw_quality(db, model, start, end, reference, scope)
    return scope


def _raw_quality(db, model, start, end, reference, scope: Scope) -> None:
    """The reference's expectation suite over the raw inputs logged in the window (at most the
    RAW_SUITE_MAX_ROWS most recent records of the scope), merged into the quality signal."""
    from ..testing.expect import Suite, run_suite
    from .logged import LoggedInputs

    table = LoggedInputs(db, model, start, end, scope.key, RAW_SUITE_MAX_ROWS)
    if not table.rows:
        return
    result = run_suite(Suite.parse(reference.suite, "the reference's suite"), table)
    checks = [{"check": f"{o.dimension}/{o.kind} on {o.column or '-'}: expected {o.expected}, observed {o.observed}",
               "failing_share": o.failing_share if not o.success else 0.0, "rows": o.rows or result.rows,
               "source": "raw inputs"} for o in result.outcomes]
    merged = sorted(scope.details.get("quality", []) + checks, key=lambda c: -c["failing_share"])
    scope.details["quality"] = merged
    scope.signals["quality.rows"] = max(scope.signals.get("quality.rows") or 0, result.rows)
    scope.signals["quality.failing_share"] = max((c["failing_share"] for c in merged), default=None)
    scope.signals["quality.failed_checks"] = sum(c["failing_share"] > 0.01 for c in merged)


def _series(reference, sketches: dict, by) -> dict:
    """Per step (series_step) and scope: estimated accuracy, low-confidence share, drift share,
    latency p95."""
    out: dict = defaultdict(dict)
    ref_h = {f: reference.histogram(f) for f in reference.histograms} if reference else {}
    features = drift_features(reference) if reference else []
    for key, hours in sketches.items():
        name = ", ".join(f"{k}={v or '-'}" for k, v in zip(by, key)) or "all"
        for hour in sorted(hours):
            hists = hours[hour]
            conf = hists.get("out.confidence")
            if conf is not None and conf.total and reference is not None:
                values, counts = conf.arrays()
                if reference.calibration is not None:
                    est = float((reference.calibration.expected(values) * counts).sum() / counts.sum())
                    out["performance.estimated_accuracy"].setdefault(name, []).append([hour, est])
                if reference.low_confidence is not None:
                    share = float(counts[values < reference.low_confidence].sum() / counts.sum())
                    out["proxy.low_confidence_share"].setdefault(name, []).append([hour, share])
            if ref_h:
                drift = dataset_drift(ref_h, hists, features, detail=False)
                if drift.share is not None:
                    out["drift.share"].setdefault(name, []).append([hour, drift.share])
            latency = hists.get("sys.latency_ms")
            if latency is not None and latency.total:
                out["system.latency_p95_ms"].setdefault(name, []).append([hour, latency.quantile(0.95)])
            rows = max((h.total for f, h in hists.items() if f.startswith("out.")), default=0)
            out["records"].setdefault(name, []).append([hour, rows])
    return dict(out)
