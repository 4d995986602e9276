"""Hourly rollups of the record aggregates (edgekit.monitor.rollups) on a real collector database,
SQLite and PostgreSQL: a report read from them equals the report read from the raw records at every
step (before a roll, after it, with a late record in an old hour, after a new reference's
threshold), and it still holds the pruned hours, which only the rollups remember."""

import math
import time

import numpy as np
import pytest

from edgekit.collector.db import Database, add_device
from edgekit.collector.ingest import ingest
from edgekit.monitor.reference import Reference, save_reference
from edgekit.monitor.rollups import roll
from edgekit.monitor.signals import snapshot
from edgekit.sync.record import Batch, encode_array

pytest.importorskip("scipy")

HOUR = 3600
# 08:30 UTC today: mid-hour (the window's edges are partial hours), and the day before holds the
# oldest records (PostgreSQL partitions by day around now)
END = (int(time.time()) // 86400) * 86400 + 8.5 * HOUR
RECORD_SIGNALS = ("records", "rows", "proxy.low_confidence_share", "proxy.entropy_mean", "proxy.identical_output_share",
                  "proxy.repeated_input_share", "proxy.nonfinite_share", "proxy.fallback_share", "proxy.cached_share",
                  "system.devices_reporting", "system.lag_max_s", "system.lag_mean_s", "system.last_record")


def _records(device: str, first_id: int, hours_ago: float, n: int, rng, stuck: bool = False) -> list[dict]:
    out = []
    for i in range(n):
        logits = rng.normal(size=3) * 2
        probs = (np.exp(logits) / np.exp(logits).sum()).astype(np.float32)
        if stuck:  # one answer to every picture: identical outputs
            probs = np.array([0.7, 0.2, 0.1], np.float32)
        record = {"id": first_id + i, "request_id": f"{device}-{first_id + i}", "time": END - hours_ago * HOUR + i,
                  "model": "tiny", "version": "2" if i % 4 == 0 else "1", "latency_ms": 2.0 + i % 5,
                  "variant": "int8" if i % 3 else "fp32", "outputs": {"y": encode_array(probs[None])},
                  "fallbacks": ["RuntimeError: injected"] if i % 7 == 0 else (["OSError: disk"] if i % 13 == 0 else []),
                  "cached": i % 11 == 0}
        if i % 2:  # inputs shipped: some of them repeat
            record["inputs"] = {"x": encode_array(np.full((1, 4), i % 5, np.float32))}
        out.append(record)
    return out


def _send(db, device: str, records: list[dict]) -> None:
    with db.read() as tx:
        known = tx.one("SELECT 1 FROM devices WHERE name = ?", (device,))
    if known is None:
        add_device(db, device)
    ingest(db, device, f"{device}-{records[0]['id']}", Batch.dumps(f"store-{device}", records, []))


def _reference(low: float) -> Reference:
    return Reference("tiny", time.time(), 100, "classification", "test", {}, {}, low_confidence=low)


def _signals(snap) -> dict:
    scopes = {"all": snap.total} | {s.name: s for s in snap.scopes}
    return {name: ({k: s.signals[k] for k in RECORD_SIGNALS},
                   s.details["fallback_reasons"], s.details["variants"]) for name, s in scopes.items()}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        (sa, fa, va), (sb, fb, vb) = a[name], b[name]
        assert (fa, va) == (fb, vb), name
        for k in sa:
            x, y = sa[k], sb[k]
            if isinstance(x, float) and isinstance(y, float):
                assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9), (name, k, x, y)
            else:
                assert x == y, (name, k, x, y)


def test_a_report_from_rollups_equals_the_records_and_keeps_the_pruned_hours(db_url):
    db = Database(db_url)
    raw = Database(db_url)
    raw.rollups = False  # the same database, read from its records only
    rng = np.random.default_rng(0)
    save_reference(db, _reference(0.6))
    sent = 0
    for hours_ago in (0.2, 1, 2, 5, 12, 20, 29):
        for d, device in enumerate(("pi-a", "pi-b", "cam-stuck")):
            _send(db, device, _records(device, sent + 1, hours_ago + d * 0.1, 40, rng, stuck=device == "cam-stuck"))
            sent += 40
    start = END - 30 * HOUR

    def both(by=("version", "device")):
        return (_signals(snapshot(db, "tiny", start, END, by=by, now=END)),
                _signals(snapshot(raw, "tiny", start, END, by=by, now=END)))

    rolled, truth = both()
    _same(rolled, truth)  # nothing rolled up yet: every hour is dirty
    assert truth["all"][0]["records"] == sent
    assert truth["version=1, device=cam-stuck"][0]["proxy.identical_output_share"] > 0.5

    done = roll(db, now=END)
    assert done["marks"] > 0
    with db.read() as tx:
        assert tx.one("SELECT COUNT(*) FROM record_hours")[0] > 0
        left = tx.one("SELECT COUNT(*) FROM rollup_dirty")[0]  # the last hours have not settled
        assert 0 < left < done["marks"]
    _same(*both())
    _same(*both(by=("device",)))

    # a late record lands in an hour already rolled up: read from the records until rolled again
    late = _records("pi-a", 10_000, 5, 5, rng)
    _send(db, "pi-a", late)
    sent += 5
    rolled, truth = both()
    _same(rolled, truth)
    assert truth["all"][0]["records"] == sent
    assert roll(db, now=END)["marks"] == 1  # its hour on pi-a
    _same(*both())

    # a new reference moves the low-confidence threshold: rows counted at the old one are recounted
    save_reference(db, _reference(0.45))
    _same(*both())
    assert roll(db, now=END)["healed"] > 0
    with db.read() as tx:
        assert tx.one("SELECT COUNT(*) FROM record_hours WHERE low_at <> 0.45")[0] == 0
    before_prune = both()[0]
    _same(before_prune, both()[1])

    # retention drops the records of the day before (a whole partition on PostgreSQL); their
    # rollups stay, so a report over the window still counts them (the raw records no longer can)
    from edgekit.collector.partitions import prune

    info = prune(db, older_than_s=8 * HOUR, now=END)
    assert info["records_deleted"] == 360
    _same(_signals(snapshot(db, "tiny", start, END, by=("version", "device"), now=END)), before_prune)
    assert _signals(snapshot(raw, "tiny", start, END, now=END))["all"][0]["records"] == sent - 360
    # a record that comes after its hour was pruned is counted in the sketches, not in that hour's
    # rollup: its hour's other records are gone, so a recount would make the hour one record
    _send(db, "pi-b", _records("pi-b", 20_000, 20.1, 1, rng))
    _same(_signals(snapshot(db, "tiny", start, END, by=("version", "device"), now=END)), before_prune)
    roll(db, now=END)
    _same(_signals(snapshot(db, "tiny", start, END, by=("version", "device"), now=END)), before_prune)
