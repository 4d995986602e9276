"""The read side for retraining: predictions joined with their feedback, and fleet statistics."""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path
from typing import Optional

import numpy as np

from .._io import atomic_write_bytes
from ..errors import EdgekitError
from ..sync.store import decode_array
from .db import Database


def parse_time(text: Optional[str]) -> float:
    if not text:
        return 0.0
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise EdgekitError(f"bad time {text!r}", "use ISO 8601 (2026-11-28T10:00) or a Unix timestamp") from None


def export(db: Database, out: str | Path, since: Optional[str] = None, model: Optional[str] = None) -> dict:
    """Write an .npz: inputs/<name> and outputs/<name> stacked over records that kept inputs,
    with request_id, device, time, model, label ('' without feedback) and outcome."""
    t0 = parse_time(since)
    sql = ("SELECT r.device, r.request_id, r.time, r.model, r.outputs, r.inputs, f.label, f.outcome FROM records r "
           "LEFT JOIN (SELECT device, request_id, label, outcome, MAX(feedback_id) AS fid FROM feedback "
           "GROUP BY device, request_id, label, outcome) f ON f.device = r.device AND f.request_id = r.request_id "
           "WHERE r.time >= ?" + (" AND r.model = ?" if model else "") + " ORDER BY r.time")
    with db.connect() as tx:
        rows = tx.all(sql, (t0, model) if model else (t0,))
    columns: dict[str, list] = {"request_id": [], "device": [], "time": [], "model": [], "label": [], "outcome": []}
    arrays: dict[str, list] = {}
    seen = set()
    for device, request_id, when, name, outputs, inputs, label, outcome in rows:
        if (device, request_id) in seen or inputs is None:
            continue  # one row per prediction (latest feedback); only rows with inputs can train
        seen.add((device, request_id))
        for prefix, payload in (("inputs", inputs), ("outputs", outputs)):
            for key, value in json.loads(payload).items():
                arrays.setdefault(f"{prefix}/{key}", []).append(decode_array(value))
        columns["request_id"].append(request_id)
        columns["device"].append(device)
        columns["time"].append(when)
        columns["model"].append(name)
        decoded = json.loads(label) if label else None
        columns["label"].append("" if decoded is None else str(decoded))
        columns["outcome"].append(outcome or "")
    if not columns["request_id"]:
        raise EdgekitError("no logged predictions with inputs match", "widen --since/--model, or check the sampling policy")
    data = {k: np.concatenate(v) for k, v in arrays.items()}
    data.update({k: np.asarray(v) for k, v in columns.items()})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **data)
    atomic_write_bytes(out, buffer.getvalue())
    labelled = sum(1 for x in columns["label"] if x)
    return {"records": len(columns["request_id"]), "labelled": labelled, "file": str(out),
            "arrays": sorted(data)}


def stats(db: Database) -> dict:
    with db.connect() as tx:
        per = tx.all("SELECT device, model, COUNT(*), MAX(time) FROM records GROUP BY device, model ORDER BY device, model")
        fb = dict(tx.all("SELECT device, COUNT(DISTINCT request_id) FROM feedback GROUP BY device"))
        devices = tx.all("SELECT name, revoked, last_seen FROM devices ORDER BY name")
    totals: dict[str, int] = {}
    for device, _, count, _ in per:
        totals[device] = totals.get(device, 0) + count
    return {
        "by_device_model": [{"device": d, "model": m, "records": n, "last_record": t} for d, m, n, t in per],
        "devices": [{"device": name, "revoked": bool(rev), "last_seen": seen, "records": totals.get(name, 0),
                     "feedback_rate": (fb.get(name, 0) / totals[name]) if totals.get(name) else 0.0}
                    for name, rev, seen in devices],
    }
