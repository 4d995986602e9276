"""The read side for retraining: predictions joined with their feedback, and fleet statistics.

Rows are streamed from the database in chunks (a server-side cursor on PostgreSQL). One bad
stored row (an array that does not decode, a non-finite time) is skipped and reported, never
allowed to break an export or a fleet report.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Optional

import numpy as np

from .._io import atomic_write_bytes
from ..errors import EdgekitError
from ..sync.record import decode_array
from .db import Database

CHUNK = 2000

# The latest feedback per prediction (ties: the later feedback row).
_SQL = ("WITH fb AS (SELECT device, request_id, label, outcome, ROW_NUMBER() OVER "
        "(PARTITION BY device, request_id ORDER BY time DESC, feedback_id DESC) AS n FROM feedback) "
        "SELECT r.device, r.request_id, r.time, r.model, r.version, r.outputs, r.inputs, fb.label, fb.outcome "
        "FROM records r LEFT JOIN fb ON fb.device = r.device AND fb.request_id = r.request_id AND fb.n = 1 "
        "WHERE r.time >= ? AND r.inputs IS NOT NULL{filters} ORDER BY r.time, r.device, r.store, r.record_id")


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


def _signature(arrays: dict[str, np.ndarray]) -> tuple:
    """What rows must share to be stacked: names, dtypes and the shape after the batch axis."""
    return tuple(sorted((k, str(v.dtype), v.shape[1:]) for k, v in arrays.items()))


def _describe(signature: tuple) -> str:
    return ", ".join(f"{name}:{dtype}{list(shape)}" for name, dtype, shape in signature)


def _row_labels(label_text: Optional[str], rows: int) -> tuple[list[str], bool]:
    """One label per row: a list label spreads over a batch record's rows; a scalar labels a
    single-row record. (labels, ambiguous): a scalar on a batch cannot be placed."""
    if label_text is None:
        return [""] * rows, False
    label = json.loads(label_text)
    if label is None:
        return [""] * rows, False
    if isinstance(label, list):
        if len(label) == rows:
            return ["" if v is None else str(v) for v in label], False
        return [""] * rows, True
    if rows == 1:
        return [str(label)], False
    return [""] * rows, True


def _decode_row(outputs: str, inputs: str) -> tuple[dict, dict, int]:
    decoded = {}
    for prefix, payload in (("inputs", inputs), ("outputs", outputs)):
        for key, value in json.loads(payload).items():
            array = decode_array(value)
            if array.ndim == 0:
                raise ValueError(f"{prefix}/{key} is a scalar, not a batch")
            decoded[f"{prefix}/{key}"] = array
    sizes = {len(a) for a in decoded.values()}
    if len(sizes) != 1:
        raise ValueError(f"arrays disagree on the number of rows: {sorted(sizes)}")
    ins = {k: v for k, v in decoded.items() if k.startswith("inputs/")}
    if not ins:
        raise ValueError("no inputs")
    return ins, {k: v for k, v in decoded.items() if k.startswith("outputs/")}, sizes.pop()


def export(db: Database, out: str | Path, since: Optional[str] = None, model: Optional[str] = None,
           version: Optional[str] = None) -> dict:
    """Write an .npz with one row per predicted sample: inputs/<name> and outputs/<name>
    stacked, and per row request_id, row (its index inside a batch prediction), device, time,
    model, version, label ('' without feedback) and outcome."""
    params: list = [parse_time(since)]
    filters = ""
    if model:
        filters += " AND r.model = ?"
        params.append(model)
    if version:
        filters += " AND r.version = ?"
        params.append(version)
    columns: dict[str, list] = {k: [] for k in ("request_id", "row", "device", "time", "model", "version", "label",
                                                "outcome")}
    arrays: dict[str, list] = {}
    signature = None
    skipped: Counter = Counter()
    records = ambiguous = 0
    with db.connect() as tx:
        for chunk in tx.stream(_SQL.format(filters=filters), tuple(params), CHUNK):
            for device, request_id, when, name, ver, outputs, inputs, label, outcome in chunk:
                try:
                    if when is None or not math.isfinite(when):
                        raise ValueError("time is not a finite number")
                    ins, outs, rows = _decode_row(outputs, inputs)
                    labels, unplaced = _row_labels(label, rows)
                except (ValueError, TypeError, KeyError) as exc:
                    skipped[str(exc).split(":")[0][:80]] += 1
                    continue
                sig = _signature({**ins, **outs})
                if signature is None:
                    signature = sig
                elif sig != signature:
                    raise EdgekitError(
                        f"records of different shapes cannot share one export: {_describe(signature)} "
                        f"vs {_describe(sig)} (request {request_id} from {device})",
                        "export one model and version at a time: --model NAME --version V")
                for key, value in {**ins, **outs}.items():
                    arrays.setdefault(key, []).append(value)
                ambiguous += unplaced
                records += 1
                columns["request_id"] += [request_id] * rows
                columns["row"] += list(range(rows))
                columns["device"] += [device] * rows
                columns["time"] += [when] * rows
                columns["model"] += [name] * rows
                columns["version"] += [ver or ""] * rows
                columns["label"] += labels
                columns["outcome"] += [outcome or ""] * rows
    if not records:
        bad = f" ({sum(skipped.values())} unreadable rows skipped)" if skipped else ""
        raise EdgekitError(f"no logged predictions with inputs match{bad}",
                           "widen --since/--model, or check the sampling policy")
    data = {k: np.concatenate(v) for k, v in arrays.items()}
    data.update({k: np.asarray(v) for k, v in columns.items()})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **data)
    atomic_write_bytes(out, buffer.getvalue())
    return {"records": records, "rows": len(columns["row"]), "labelled": sum(1 for x in columns["label"] if x),
            "labels_unplaced": ambiguous, "skipped": sum(skipped.values()), "skipped_reasons": dict(skipped),
            "file": str(out), "arrays": sorted(data)}


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def stats(db: Database) -> dict:
    """Per device and model counts; rows whose time is not a finite number are counted apart."""
    valid = "time IS NOT NULL AND time > -1e300 AND time < 1e300"
    with db.connect() as tx:
        per = tx.all(f"SELECT device, model, COUNT(*), MAX(CASE WHEN {valid} THEN time END) FROM records "
                     "GROUP BY device, model ORDER BY device, model")
        invalid = tx.one(f"SELECT COUNT(*) FROM records WHERE NOT ({valid})")[0]
        fb = dict(tx.all("SELECT device, COUNT(DISTINCT request_id) FROM feedback GROUP BY device"))
        devices = tx.all("SELECT name, revoked, last_seen FROM devices ORDER BY name")
    totals: dict[str, int] = {}
    for device, _, count, _ in per:
        totals[device] = totals.get(device, 0) + count
    return {
        "by_device_model": [{"device": d, "model": m, "records": n, "last_record": _finite(t)} for d, m, n, t in per],
        "devices": [{"device": name, "revoked": bool(rev), "last_seen": _finite(seen), "records": totals.get(name, 0),
                     "feedback_rate": (fb.get(name, 0) / totals[name]) if totals.get(name) else 0.0}
                    for name, rev, seen in devices],
        "invalid_rows": invalid,
    }
