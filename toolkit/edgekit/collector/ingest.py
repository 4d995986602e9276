"""Ingest a device batch exactly once: validate, deduplicate by idempotency key and row identity."""

from __future__ import annotations

import hashlib
import json
import time

from ..sync.record import Batch, BatchError
from .db import Database

__all__ = ["BatchError", "KeyConflict", "ingest"]


class KeyConflict(ValueError):
    """The same idempotency key with another payload (HTTP 422)."""


def _replay(tx, device: str, key: str, payload_hash: str) -> dict:
    seen = tx.one("SELECT payload_hash, result FROM batches WHERE device = ? AND idempotency_key = ?", (device, key))
    if seen[0] != payload_hash:
        raise KeyConflict("this Idempotency-Key was used for a different payload")
    return json.loads(seen[1])


def ingest(db: Database, device: str, key: str, body: bytes) -> tuple[dict, bool]:
    """(result, replayed). Raises BatchError or KeyConflict; the batch is validated in full
    before anything touches the database."""
    if not key or len(key) > 200 or not key.isascii() or not key.isprintable():
        raise BatchError("an Idempotency-Key header (1-200 printable ASCII characters) is required")
    payload_hash = hashlib.sha256(body).hexdigest()
    batch = Batch.parse(body)
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
        records = [(device, store, r.id, r.request_id, r.time, r.model, r.version, r.variant, r.latency_ms,
                    json.dumps(list(r.fallbacks)), json.dumps(r.outputs),
                    json.dumps(r.inputs) if r.inputs is not None else None,
                    json.dumps(r.summary) if r.summary is not None else None, int(r.cached), now)
                   for r in batch.records]
        feedback = [(device, store, f.id, f.request_id, f.time, json.dumps(f.label), f.outcome, now)
                    for f in batch.feedback]
        new = tx.executemany(
            "INSERT INTO records (device, store, record_id, request_id, time, model, version, variant, latency_ms, "
            "fallbacks, outputs, inputs, summary, cached, received) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT DO NOTHING", records) if records else 0
        new_fb = tx.executemany(
            "INSERT INTO feedback (device, store, feedback_id, request_id, time, label, outcome, received) "
            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", feedback) if feedback else 0
        result = {"accepted": new, "duplicates": len(records) - new, "feedback_accepted": new_fb,
                  "feedback_duplicates": len(feedback) - new_fb}
        tx.execute("UPDATE batches SET result = ? WHERE device = ? AND idempotency_key = ?",
                   (json.dumps(result), device, key))
        tx.execute("UPDATE devices SET last_seen = ? WHERE name = ?", (now, device))
    return result, False
