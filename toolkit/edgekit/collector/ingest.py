"""Ingest a device batch exactly once: validate, deduplicate by idempotency key and row identity."""

from __future__ import annotations

import hashlib
import json
import time

import msgspec

from ..monitor.derive import COLUMNS, Item, derive, sketch_rows
from ..monitor.rollups import mark
from ..sync.record import Batch, BatchError
from .db import SKETCH_UPSERT, Database, has_fallback

__all__ = ["BatchError", "KeyConflict", "ingest"]


class KeyConflict(ValueError):
    """The same idempotency key with another payload (HTTP 422)."""


class _Retry(Exception):
    """Another batch stored some of these records while this one ran: roll back and start over,
    so that the sketches count each record once."""


def _replay(tx, device: str, key: str, payload_hash: str) -> dict:
    seen = tx.one("SELECT payload_hash, result FROM batches WHERE device = ? AND idempotency_key = ?", (device, key))
    if seen[0] != payload_hash:
        raise KeyConflict("this Idempotency-Key was used for a different payload")
    return json.loads(seen[1])


def _text(value) -> str:
    return msgspec.json.encode(value).decode()


def ingest(db: Database, device: str, key: str, body: bytes) -> tuple[dict, bool]:
    """(result, replayed). Raises BatchError or KeyConflict; the batch is validated in full
    before anything touches the database."""
    if not key or len(key) > 200 or not key.isascii() or not key.isprintable():
        raise BatchError("an Idempotency-Key header (1-200 printable ASCII characters) is required")
    payload_hash = hashlib.sha256(body).hexdigest()
    batch = Batch.parse(body)
    if getattr(db, "partitioned", False):  # the days' partitions first, outside the ingest transaction
        from .partitions import ensure

        ensure(db, [r.time for r in batch.records])
    for _ in range(4):
        try:
            return _store(db, device, key, payload_hash, batch)
        except _Retry:
            continue
    return _store(db, device, key, payload_hash, batch)


def _store(db: Database, device: str, key: str, payload_hash: str, batch: Batch) -> tuple[dict, bool]:
    now = time.time()
    with db.connect() as tx:
        # Claim the key first. On PostgreSQL a concurrent request with the same key waits here
        # for the first to commit, then finds the key taken and replays its result: two identical
        # retries racing each other never both insert, and never collide into a 500.
        claimed = tx.execute("INSERT INTO batches (device, idempotency_key, payload_hash, result, received) "
                             "VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING", (device, key, payload_hash, "{}", now)).rowcount
        if claimed != 1:
            return _replay(tx, device, key, payload_hash), True
        store = batch.store
        records = list(batch.records)
        if records:
            # Only rows not stored before count into the sketches: a batch re-cut after a 413
            # may repeat records that an earlier, different batch already delivered.
            ids = [r.id for r in records]
            seen = {row[0] for row in tx.all(
                "SELECT record_id FROM records WHERE device = ? AND store = ? AND record_id BETWEEN ? AND ?",
                (device, store, min(ids), max(ids)))}
            records = [r for r in records if r.id not in seen]
        # a version 1 device sent null for "no version"
        derived, counts = derive([Item(r.model, r.version or "", r.time, r.latency_ms, r.outputs, r.inputs, r.summary)
                                  for r in records])
        rows = [(device, store, r.id, r.request_id, r.time, r.model, r.version or "", r.variant or "", r.latency_ms,
                 fallbacks, _text(r.outputs), _text(r.inputs) if r.inputs is not None else None,
                 _text(r.summary) if r.summary is not None else None, int(r.cached), now,
                 *d.columns(), has_fallback(fallbacks))
                for r, d in zip(records, derived) for fallbacks in (json.dumps(list(r.fallbacks)),)]
        feedback = [(device, store, f.id, f.request_id, f.time, json.dumps(f.label), f.outcome, now)
                    for f in batch.feedback]
        names = ("device, store, record_id, request_id, time, model, version, variant, latency_ms, fallbacks, outputs, "
                 f"inputs, summary, cached, received, {', '.join(COLUMNS)}, has_fallback")
        new = tx.executemany(f"INSERT INTO records ({names}) VALUES ({', '.join('?' * (16 + len(COLUMNS)))}) "
                             "ON CONFLICT DO NOTHING", rows) if rows else 0
        if new != len(rows):  # a concurrent batch stored some of them first: count only ours
            raise _Retry()
        if counts:
            tx.executemany(SKETCH_UPSERT, list(sketch_rows(device, counts)))
            tx.executemany("INSERT INTO model_devices (model, device) VALUES (?, ?) ON CONFLICT DO NOTHING",
                           sorted({(r.model, device) for r in records}))
        mark(tx, device, records)
        new_fb = tx.executemany(
            "INSERT INTO feedback (device, store, feedback_id, request_id, time, label, outcome, received) "
            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", feedback) if feedback else 0
        if batch.health is not None:
            h = batch.health
            tx.execute("UPDATE devices SET dropped = ?, pending = ?, oldest_pending = ?, dead_letter = ?, "
                       "health_time = ? WHERE name = ?", (h.dropped, h.pending, h.oldest_pending, h.dead_letter,
                                                          now, device))
        result = {"accepted": new, "duplicates": len(batch.records) - new, "feedback_accepted": new_fb,
                  "feedback_duplicates": len(feedback) - new_fb}
        tx.execute("UPDATE batches SET result = ? WHERE device = ? AND idempotency_key = ?",
                   (json.dumps(result), device, key))
        tx.execute("UPDATE devices SET last_seen = ? WHERE name = ?", (now, device))
    return result, False
