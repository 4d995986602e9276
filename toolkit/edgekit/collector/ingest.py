"""Ingest a device batch exactly once: validate, deduplicate by idempotency key and record id."""

from __future__ import annotations

import hashlib
import json
import time

from .db import Database


class BatchError(ValueError):
    """A malformed batch (HTTP 400) with the reason."""


class KeyConflict(ValueError):
    """The same idempotency key with another payload (HTTP 422)."""


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise BatchError(message)


def validate(batch) -> None:
    _check(isinstance(batch, dict), "the batch must be a JSON object")
    _check(isinstance(batch.get("records", []), list) and isinstance(batch.get("feedback", []), list),
           "records and feedback must be lists")
    for i, r in enumerate(batch.get("records", [])):
        where = f"records[{i}]"
        _check(isinstance(r, dict), f"{where} must be an object")
        _check(isinstance(r.get("id"), int) and not isinstance(r.get("id"), bool), f"{where}.id must be an integer")
        _check(isinstance(r.get("request_id"), str) and r["request_id"], f"{where}.request_id must be a string")
        _check(isinstance(r.get("time"), (int, float)), f"{where}.time must be a number")
        _check(isinstance(r.get("model"), str), f"{where}.model must be a string")
        _check(isinstance(r.get("outputs"), dict), f"{where}.outputs must be an object")
        _check(r.get("inputs") is None or isinstance(r["inputs"], dict), f"{where}.inputs must be an object or null")
    for i, f in enumerate(batch.get("feedback", [])):
        where = f"feedback[{i}]"
        _check(isinstance(f, dict), f"{where} must be an object")
        _check(isinstance(f.get("id"), int) and not isinstance(f.get("id"), bool), f"{where}.id must be an integer")
        _check(isinstance(f.get("request_id"), str), f"{where}.request_id must be a string")
        _check(isinstance(f.get("time"), (int, float)), f"{where}.time must be a number")


def ingest(db: Database, device: str, key: str, body: bytes) -> tuple[dict, bool]:
    """(result, replayed). Raises BatchError or KeyConflict."""
    payload_hash = hashlib.sha256(body).hexdigest()
    _check(bool(key) and len(key) <= 200, "an Idempotency-Key header (at most 200 characters) is required")
    try:
        batch = json.loads(body)
    except ValueError as exc:
        raise BatchError(f"not JSON: {exc}") from None
    validate(batch)
    now = time.time()
    with db.connect() as tx:
        seen = tx.one("SELECT payload_hash, result FROM batches WHERE idempotency_key = ? AND device = ?", (key, device))
        if seen:
            if seen[0] != payload_hash:
                raise KeyConflict("this Idempotency-Key was used for a different payload")
            return json.loads(seen[1]), True
        records = [(device, r["id"], r["request_id"], float(r["time"]), r["model"], r.get("version"), r.get("variant"),
                    r.get("latency_ms"), json.dumps(r.get("fallbacks") or []), json.dumps(r["outputs"]),
                    json.dumps(r["inputs"]) if r.get("inputs") is not None else None,
                    json.dumps(r["summary"]) if r.get("summary") is not None else None, now)
                   for r in batch.get("records", [])]
        feedback = [(device, f["id"], f["request_id"], float(f["time"]), json.dumps(f.get("label")), f.get("outcome"), now)
                    for f in batch.get("feedback", [])]
        new = tx.executemany(
            "INSERT INTO records (device, record_id, request_id, time, model, version, variant, latency_ms, fallbacks, "
            "outputs, inputs, summary, received) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", records)
        new_fb = tx.executemany(
            "INSERT INTO feedback (device, feedback_id, request_id, time, label, outcome, received) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", feedback)
        result = {"accepted": new, "duplicates": len(records) - new, "feedback_accepted": new_fb,
                  "feedback_duplicates": len(feedback) - new_fb}
        tx.execute("INSERT INTO batches (idempotency_key, device, payload_hash, result, received) VALUES (?,?,?,?,?)",
                   (key, device, payload_hash, json.dumps(result), now))
        tx.execute("UPDATE devices SET last_seen = ? WHERE name = ?", (now, device))
    return result, False
