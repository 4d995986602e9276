"""Hourly rollups of the record aggregates monitoring reads, maintained on arrival.

The sketches roll the features up by hour (drift, quantiles, confidence, classes, latency). This
rolls up the rest of what monitoring read from raw records: per model, version, device and hour,
the counts and sums of signals (records, rows, low confidence, entropy, non-finite outputs,
fallbacks, cache hits, distinct outputs and inputs, lag) and the records per fallback reason and
per variant. A week's report reads 168 rows per device and version, not every record.

Exact, not estimated:
- Counts and sums add up over hours. Distinct outputs and inputs are counted per device and hour,
  on every path (raw records, rollups, the lake), so they add up too: a stuck sensor or a frozen
  camera repeats itself within the hour.
- Ingest marks the (model, device, hour) its batch touched dirty, in its own transaction. ``roll``
  recomputes settled dirty hours from the records and clears a mark only if no batch touched it
  since the mark was read (its stamp). A reader (one snapshot) takes whole hours before the first
  dirty one from the rollups and the rest from the records: its numbers are the records' whether
  ``roll`` ran a minute ago or never.
- The low-confidence count depends on the reference's threshold. A row keeps the threshold it was
  counted at; a reader treats a row at another threshold as dirty while its hour still has
  records, and ``roll`` recounts it. Hours already pruned keep theirs (their records are gone):
  their low-confidence share is left out, never counted at the wrong threshold.
"""

from __future__ import annotations

import math
import time
from itertools import groupby
from typing import Callable, Optional

from .derive import HOUR

SETTLE_S = 120  # an hour is rolled up once it ended this long ago (devices still sending it)
CHUNK = 2000  # dirty marks per transaction
NO_THRESHOLD = -1.0  # the threshold of a model without a reference: no record counts as low

# What monitoring sums per (version, device): name -> SQL over records r, per hour. The one '?'
# is the low-confidence threshold.
AGGREGATES = (
    ("records", "COUNT(*)"),
    ("rows", "SUM(COALESCE(r.rows, 1))"),
    ("low_confidence", "SUM(CASE WHEN r.confidence < ? THEN 1 ELSE 0 END)"),
    ("with_confidence", "COUNT(r.confidence)"),
    ("entropy_sum", "SUM(r.entropy)"),
    ("with_entropy", "COUNT(r.entropy)"),
    ("nonfinite", "SUM(r.nonfinite)"),
    ("fallbacks", "SUM(r.has_fallback)"),
    ("cached", "SUM(r.cached)"),
    ("distinct_outputs", "COUNT(DISTINCT CASE WHEN r.cached = 0 THEN r.out_hash END)"),
    # different inputs among the hashed outputs: a resent input may repeat its output (a record
    # from a device too old to send its inputs' hash counts as a different input)
    ("distinct_inputs", "COUNT(DISTINCT CASE WHEN r.cached = 0 AND r.out_hash IS NOT NULL THEN r.in_hash END)"),
    ("unhashed_inputs", "SUM(CASE WHEN r.cached = 0 AND r.out_hash IS NOT NULL AND r.in_hash IS NULL THEN 1 ELSE 0 END)"),
    ("hashed_inputs", "SUM(CASE WHEN r.cached = 0 AND r.out_hash IS NOT NULL AND r.in_hash IS NOT NULL THEN 1 ELSE 0 END)"),
    ("lag_sum", "SUM(r.received - r.time)"),
    ("lag_max", "MAX(r.received - r.time)"),
    ("last_time", "MAX(r.time)"),
)
NAMES = tuple(name for name, _ in AGGREGATES)
SUMS = tuple(n for n in NAMES if n not in ("lag_max", "last_time")) + ("low_judged",)
_FLOAT_SUMS = ("entropy_sum", "lag_sum")
# Records counted per value: kind -> (the value, which records).
COUNTS = {"fallbacks": ("r.fallbacks", "r.has_fallback = 1"), "variant": ("COALESCE(r.variant, '')", "1 = 1")}
_KEY = "r.model AS model, COALESCE(r.version, '') AS version, r.device AS device"


def _hour(tx) -> str:
    return f"{tx.int_floor(f'r.time / {HOUR}')} * {HOUR}"


def hourly(tx, where: str) -> str:
    """Per (model, version, device, hour): every aggregate of the records matching ``where``.
    Parameters: the threshold, then ``where``'s."""
    return (f"SELECT {_KEY}, {_hour(tx)} AS hour, {', '.join(f'{sql} AS {name}' for name, sql in AGGREGATES)} "
            "FROM records r "
            f"WHERE {where} GROUP BY 1, 2, 3, 4")


def _hourly_counts(tx, kind: str, where: str) -> str:
    """Per (model, version, device, hour, kind, value): the records matching ``where``."""
    value, which = COUNTS[kind]
    return (f"SELECT {_KEY}, {_hour(tx)} AS hour, '{kind}' AS kind, {value} AS value, COUNT(*) AS n FROM records r "
            f"WHERE {where} AND {which} GROUP BY 1, 2, 3, 4, 6")


# -- the reader ------------------------------------------------------------------------------------

def _plan(tx, model: str, start: float, end: float, low: Optional[float]) -> tuple[list, Optional[tuple]]:
    """(raw time ranges, rollup hour range or None) covering [start, end): whole clean hours from
    the rollups, the edges and everything from the first dirty hour on from records (or the first
    counted at another threshold than ``low``; None: what is read does not depend on it)."""
    if not getattr(getattr(tx, "db", None), "rollups", False):  # the lake and raw readers have none
        return [(start, end)], None
    first, last = math.ceil(start / HOUR) * HOUR, int(end // HOUR) * HOUR
    if first >= last:
        return [(start, end)], None
    # Pruned hours are the rollups' alone: their records are gone (a late one only adds a row)
    kept = max(first, float(tx.meta("pruned_until") or 0.0))
    dirty = tx.one("SELECT MIN(hour) FROM rollup_dirty WHERE model = ? AND hour >= ? AND hour < ?",
                   (model, kept, last))[0] if kept < last else None
    stale = tx.one("SELECT MIN(hour) FROM record_hours WHERE model = ? AND hour >= ? AND hour < ? AND low_at <> ?",
                   (model, kept, last, low))[0] if kept < last and low is not None else None
    cut = int(min(x for x in (last, dirty, stale) if x is not None))
    raw = [(a, b) for a, b in ((start, first), (cut, end)) if b > a]
    return raw, ((first, cut) if cut > first else None)


def record_sums(tx, model: str, start: float, end: float, low: float) -> list[tuple]:
    """Rows of (version, device, *SUMS, lag_max, last_time) over [start, end), summed by the database."""
    raw, rolled = _plan(tx, model, start, end, low)
    inner = ", ".join(n for n in NAMES)
    parts, params = [], []
    for a, b in raw:
        parts.append(f"SELECT {inner}, with_confidence AS low_judged, version, device FROM "
                     f"({hourly(tx, 'r.model = ? AND r.time >= ? AND r.time < ?')}) h")
        params += [low, model, a, b]
    if rolled:
        columns = ", ".join("CASE WHEN low_at = ? THEN low_confidence ELSE 0 END AS low_confidence"
                            if n == "low_confidence" else n for n in NAMES)
        parts.append(f"SELECT {columns}, CASE WHEN low_at = ? THEN with_confidence ELSE 0 END AS low_judged, "
                     "version, device FROM record_hours WHERE model = ? AND hour >= ? AND hour < ?")
        params += [low, low, model, *rolled]
    # (PostgreSQL sums BIGINTs as NUMERIC, which Python reads as Decimal)
    sums = ", ".join(f"SUM({n})" if n in _FLOAT_SUMS else f"CAST(SUM({n}) AS BIGINT)" for n in SUMS)
    return tx.all(f"SELECT version, device, {sums}, MAX(lag_max), MAX(last_time) FROM "
                  f"({' UNION ALL '.join(parts)}) u GROUP BY version, device", tuple(params))


def record_counts(tx, model: str, start: float, end: float, kind: str) -> list[tuple]:
    """Rows of (version, device, value, records) over [start, end) for a COUNTS kind."""
    raw, rolled = _plan(tx, model, start, end, None)
    parts, params = [], []
    for a, b in raw:
        parts.append(f"SELECT version, device, value, n FROM "
                     f"({_hourly_counts(tx, kind, 'r.model = ? AND r.time >= ? AND r.time < ?')}) h")
        params += [model, a, b]
    if rolled:
        parts.append("SELECT version, device, value, n FROM record_hour_counts WHERE model = ? AND kind = ? "
                     "AND hour >= ? AND hour < ?")
        params += [model, kind, *rolled]
    return tx.all(f"SELECT version, device, value, CAST(SUM(n) AS BIGINT) FROM ({' UNION ALL '.join(parts)}) u "
                  "GROUP BY version, device, value", tuple(params))


# -- the writer ------------------------------------------------------------------------------------

MARK = ("INSERT INTO rollup_dirty (model, hour, device, stamp) VALUES (?, ?, ?, 0) "
        "ON CONFLICT (model, hour, device) DO UPDATE SET stamp = rollup_dirty.stamp + 1")


def mark(tx, device: str, records) -> None:
    """In ingest's transaction: the hours this batch's records touched are dirty until rolled up.
    The stamp moves on each touch, so a roll that read the mark before cannot clear it."""
    touched = sorted({(r.model, int(r.time // HOUR) * HOUR, device) for r in records})
    if touched:
        tx.executemany(MARK, touched)


def mark_all(tx) -> None:
    """A database from before the rollups: every hour that has records is dirty (rows an old
    collector stored with a time that is no finite number have no hour; no window holds them)."""
    tx.execute(f"INSERT INTO rollup_dirty (model, hour, device, stamp) SELECT DISTINCT r.model, {_hour(tx)}, r.device, 0 "
               "FROM records r WHERE r.time > -1e300 AND r.time < 1e300 ON CONFLICT DO NOTHING")


def backlog(tx) -> dict:
    """Device hours ingested and not rolled up yet, and the oldest of their hours (a backlog that
    grows says no collector rolls up: --rollup-every 0 and no cron)."""
    count, oldest = tx.one("SELECT COUNT(*), MIN(hour) FROM rollup_dirty")
    return {"device_hours": int(count), "oldest_hour": None if oldest is None else int(oldest)}


def _threshold(tx, model: str) -> float:
    from .reference import Reference

    row = tx.one("SELECT body FROM monitor_reference WHERE model = ?", (model,))
    low = Reference.from_json(row[0], f"the stored reference of {model}").low_confidence if row else None
    return NO_THRESHOLD if low is None else float(low)


def _heal(db, pruned: float) -> tuple[int, dict[str, float]]:
    """Rows counted at a threshold that is no longer the reference's, in hours that still have
    records, are marked dirty (once per threshold change: the meta key remembers). Returns how
    many, and each model's threshold (a reference is parsed once per roll, not once per chunk)."""
    marked, thresholds = 0, {}
    with db.connect() as tx:
        models = [r[0] for r in tx.all("SELECT DISTINCT model FROM model_devices")]
        for model in models:
            low = thresholds[model] = _threshold(tx, model)
            key = f"rollup_threshold:{model}"
            counted_at = tx.meta(key)
            if counted_at is not None and float(counted_at) == low:
                continue
            marked += max(tx.execute("INSERT INTO rollup_dirty (model, hour, device, stamp) SELECT DISTINCT model, hour, "
                                     "device, 0 FROM record_hours WHERE model = ? AND hour >= ? AND low_at <> ? "
                                     "ON CONFLICT DO NOTHING", (model, pruned, low)).rowcount, 0)
            tx.set_meta(key, repr(low))
    return marked, thresholds


def roll(db, now: Optional[float] = None, settle_s: float = SETTLE_S, chunk: int = CHUNK,
         progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Roll up every dirty hour that ended ``settle_s`` ago; returns what it did. Safe to run
    from several replicas at once (each mark is cleared only by the roll that saw its last touch)."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    limit = now - settle_s - HOUR
    with db.read() as tx:
        pruned = float(tx.meta("pruned_until") or 0.0)
    healed, thresholds = _heal(db, pruned)
    after, hours, groups = ("", -1, ""), 0, 0
    with db.read() as tx:
        total = tx.one("SELECT COUNT(*) FROM rollup_dirty WHERE hour <= ?", (limit,))[0]
    while True:
        with db.connect() as tx:
            marks = tx.all("SELECT model, hour, device, stamp FROM rollup_dirty WHERE hour <= ? AND "
                           "(model, hour, device) > (?, ?, ?) ORDER BY model, hour, device LIMIT ?",
                           (limit, *after, chunk))
            if not marks:
                break
            after = tuple(marks[-1][:3])
            for model, in_model in groupby(marks, key=lambda m: m[0]):
                low = thresholds[model] if model in thresholds else _threshold(tx, model)
                for hour, in_hour in groupby(list(in_model), key=lambda m: m[1]):
                    devices = [m[2] for m in in_hour]
                    _recount(tx, model, hour, devices, low, pruned)
                    hours += 1
            cleared = tx.executemany("DELETE FROM rollup_dirty WHERE model = ? AND hour = ? AND device = ? AND stamp = ?",
                                     marks)
            groups += max(cleared, 0)
        if progress:
            progress(min(groups, total), total)
    return {"hours": hours, "marks": groups, "healed": healed, "seconds": round(time.perf_counter() - started, 3)}


def _recount(tx, model: str, hour: int, devices: list[str], low: float, pruned: float) -> None:
    """The rollup rows of these devices in this hour, recomputed from their records. Hours already
    pruned keep the rows they have (their records are gone; a late record only adds a row)."""
    where = f"r.model = ? AND r.time >= ? AND r.time < ? AND r.device IN ({', '.join('?' * len(devices))})"
    params = (model, hour, hour + HOUR, *devices)
    columns = ", ".join(NAMES)
    update = ", ".join(f"{n} = excluded.{n}" for n in NAMES + ("low_at",))
    tx.execute(f"INSERT INTO record_hours (model, version, device, hour, {columns}, low_at) "
               f"SELECT h.*, ? FROM ({hourly(tx, where)}) h WHERE 1 = 1 "
               f"ON CONFLICT (model, hour, version, device) DO UPDATE SET {update} WHERE record_hours.hour >= ?",
               (low, low, *params, pruned))
    for kind in COUNTS:
        tx.execute("INSERT INTO record_hour_counts (model, version, device, hour, kind, value, n) "
                   f"SELECT h.* FROM ({_hourly_counts(tx, kind, where)}) h WHERE 1 = 1 "
                   "ON CONFLICT (model, hour, version, device, kind, value) DO UPDATE SET n = excluded.n "
                   "WHERE record_hour_counts.hour >= ?", (*params, pruned))
