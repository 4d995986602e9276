"""The labelling queue a curation run writes, and labels coming back as feedback.

A queue folder holds ``queue.parquet`` (request ids, scores and the inputs, for tools),
``queue.csv`` (one line per example with an empty ``label`` column, for people) and, for image
inputs, ``images/<n>.png``. ``edgekit label import labels.csv`` writes the filled-in labels into
the collector as feedback (store ``edgekit-labels``): the latest label of a prediction wins, and
importing the same file twice changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .._io import atomic_directory, atomic_write_text
from ..collector.db import LABEL_STORE
from ..errors import EdgekitError
from ..tables import OUTPUT_PREFIX, model_columns, take_rows

CSV_FIELDS = ("device", "request_id", "row", "label", "image", "predicted", "confidence", "score", "reason", "group")


def _png(image: np.ndarray, path: Path) -> bool:
    """An image input as a PNG people can look at (1 or 3 channels, NCHW or NHWC), scaled up so
    an 8x8 digit is visible. False when the input is not an image."""
    from PIL import Image

    a = np.asarray(image, np.float64)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim != 3 or a.shape[-1] not in (1, 3) or not np.isfinite(a).all():
        return False
    lo, hi = a.min(), a.max()
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    pixels = (a * 255).round().astype(np.uint8)
    img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    scale = max(1, 128 // max(img.size))
    img.resize((img.size[0] * scale, img.size[1] * scale), Image.NEAREST).save(path)
    return True


def write_queue(pool: str | Path, selection, out: str | Path) -> dict:
    """The selected rows as a labelling queue folder (written atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..collector.export import _tensor_column
    from ..metrics import probabilities

    columns = take_rows(pool, selection.rows)
    if not columns:
        raise EdgekitError("nothing was selected for labelling", "widen curation.window or raise curation.budget")
    inputs = {k: v for k, v in model_columns(columns).items() if k not in ("labels", "label")}
    out_name = next((k for k in columns if k.startswith(OUTPUT_PREFIX)), None)
    n = len(selection.rows)
    probs = probabilities(columns[out_name].reshape(n, -1)) if out_name else None
    with atomic_directory(out) as tmp:
        images = []
        image_input = next(iter(inputs)) if len(inputs) == 1 else None
        if image_input is not None and np.asarray(inputs[image_input]).ndim == 4:
            (tmp / "images").mkdir()
            for i in range(n):
                name = f"images/{i:05d}.png"
                images.append(name if _png(inputs[image_input][i], tmp / name) else "")
        lines = []
        for i in range(n):
            lines.append({"device": columns["device"][i], "request_id": columns["request_id"][i],
                          "row": int(columns["row"][i]), "label": "", "image": images[i] if images else "",
                          "predicted": int(probs[i].argmax()) if probs is not None else "",
                          "confidence": f"{probs[i].max():.4f}" if probs is not None else "",
                          "score": f"{selection.scores[i]:.4f}", "reason": selection.reasons[i],
                          "group": columns["group"][i] if "group" in columns else ""})
        with open(tmp / "queue.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(lines)
        table = {name: _tensor_column([np.asarray(v)]) for name, v in inputs.items()}
        for name in ("device", "request_id", "group", "time", "row"):
            if name in columns:
                table[name] = pa.array(columns[name].tolist())
        table["score"] = pa.array(selection.scores.astype(np.float64))
        table["reason"] = pa.array(list(selection.reasons))
        pq.write_table(pa.table(table), tmp / "queue.parquet")
    return {"queued": n, "folder": str(out), "images": sum(bool(x) for x in images)}


def read_labels(path: str | Path) -> list[tuple[str, str, int, str]]:
    """(device, request_id, row, label) from a CSV with those columns (row optional, default 0);
    rows with an empty label are skipped (not labelled yet). UTF-8 (with or without a BOM) or
    UTF-16 with its BOM, as spreadsheet programs save them."""
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"labels file {path} does not exist", "give the queue.csv you filled in")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise EdgekitError(f"{path} is not a text CSV (UTF-8 or UTF-16)",
                           "save the filled-in queue.csv as CSV, not as a spreadsheet or Parquet file") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in ("device", "request_id", "label") if c not in (reader.fieldnames or [])]
    if missing:
        raise EdgekitError(f"{path} has no {', '.join(missing)} column",
                           "keep the header of the queue.csv: device,request_id,row,label,...")
    out = []
    for line, item in enumerate(reader, start=2):
        label = (item.get("label") or "").strip()
        if not label:
            continue
        try:
            row = int(item.get("row") or 0)
        except ValueError:
            raise EdgekitError(f"{path}:{line}: row {item.get('row')!r} is not a number") from None
        out.append((item["device"].strip(), item["request_id"].strip(), row, label))
    return out


def _feedback_id(device: str, request_id: str, when: float) -> int:
    """One id per label given: labels are appended, never rewritten, so that a data set formed
    before a correction forms again as it was (``edgekit loop rebuild``)."""
    return int.from_bytes(hashlib.sha256(f"{device}\0{request_id}\0{when!r}".encode()).digest()[:7], "big")


def _latest_label(tx, device: str, request_id: str):
    """The label people gave last for a prediction (None when none), as export reads it."""
    found = tx.one("SELECT label FROM feedback WHERE device = ? AND store = ? AND request_id = ? "
                   "ORDER BY time DESC, feedback_id DESC LIMIT 1", (device, LABEL_STORE, request_id))
    return json.loads(found[0]) if found else None


def import_labels(db, path: str | Path, now: Optional[float] = None) -> dict:
    """Write a labels CSV into the collector as feedback. All or nothing: a label for a prediction
    the collector does not hold stops the import before anything is written. A label that differs
    from the last one given is added (the latest wins); one that repeats it adds nothing."""
    labels = read_labels(path)
    now = time.time() if now is None else now
    with db.connect() as tx:
        unknown, bad, sizes, values = [], [], {}, []
        for device, request_id, row, label in labels:
            found = tx.one("SELECT rows, outputs, top_class FROM records WHERE device = ? AND request_id = ? LIMIT 1",
                           (device, request_id))
            sizes[(device, request_id)] = size = (found[0] or 1) if found else 0
            if row >= size:
                unknown.append(f"{device}/{request_id}" + (f" row {row}" if row else ""))
                continue
            value, why = _parse_label(label, _classes(found))
            values.append(value)
            if why:
                bad.append(f"{device}/{request_id}: {why}")
        if unknown:
            raise EdgekitError(f"{len(unknown)} labels name predictions the collector does not hold "
                               f"(e.g. {unknown[0]}); nothing was imported",
                               "label the queue.csv that 'edgekit loop curate' wrote for this collector")
        if bad:
            raise EdgekitError(f"{len(bad)} labels are not classes of the model (e.g. {bad[0]}); nothing was imported",
                               "give each label as the class number the model predicts (0, 1, 2, ...)")
        before, given = {}, {}  # the label given last, and this file's (a batch prediction's is a list)
        for (device, request_id, row, _), value in zip(labels, values):
            key, size = (device, request_id), sizes[(device, request_id)]
            if key not in before:
                before[key] = given[key] = _latest_label(tx, device, request_id)
            given[key] = value if size == 1 else _row_list(given[key], size, row, value)
        changed = 0
        for (device, request_id), value in given.items():
            if value == before[(device, request_id)]:
                continue
            tx.execute("INSERT INTO feedback (device, store, feedback_id, request_id, time, label, outcome, received) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (device, LABEL_STORE, _feedback_id(device, request_id, now),
                                                          request_id, now, json.dumps(value), "labelled", now))
            changed += 1
    return {"imported": len(labels), "changed": changed, "file": str(path)}


MAX_LABEL_CHARS = 200


def _classes(record) -> Optional[int]:
    """How many classes the logged prediction chose among (its output's last axis), or None when
    the model is not a classifier (no top class was derived on ingest)."""
    rows, outputs, top_class = record
    if top_class is None:
        return None
    try:
        first = next(iter(json.loads(outputs).values()))
        return int(first["shape"][-1]) if first["shape"] else None
    except (ValueError, StopIteration, KeyError, TypeError, IndexError):
        return None


def _parse_label(text: str, classes: Optional[int]) -> tuple[object, Optional[str]]:
    """(the label, why it is refused or None). A classifier's label is a class number in range
    ('3', not '3.0', 'nan', 'seven' or '99' of 10); other models' labels are short text."""
    if len(text) > MAX_LABEL_CHARS:
        return text, f"a label of {len(text)} characters (at most {MAX_LABEL_CHARS})"
    if classes is None:
        return (int(text) if text.isascii() and text.isdigit() else text), None
    if not (text.isascii() and text.isdigit()):
        return text, f"{text[:40]!r} is not a class number"
    if int(text) >= classes:
        return int(text), f"class {int(text)} is out of range (the model has {classes} classes: 0-{classes - 1})"
    return int(text), None


def _row_list(current, size: int, row: int, value) -> list:
    """A batch prediction's label list with one row set (the others keep what was given before)."""
    labels = list(current) if isinstance(current, list) and len(current) == size else [None] * size
    labels[row] = value
    return labels


def read_queue_keys(queue: str | Path) -> list[tuple[str, str, int]]:
    with open(Path(queue) / "queue.csv", newline="") as f:
        return [(r["device"], r["request_id"], int(r["row"])) for r in csv.DictReader(f)]


def label_with_hook(hook_ref: str, queue: Path, out: Path) -> dict:
    """Label a queue with ``hook(queue_dir) -> one label per queue.csv line (None: unknown)``: a
    bigger model, a labelling service's client, or in a simulation the ground truth. Writes the
    filled-in CSV that ``import_labels`` reads."""
    from .._hooks import import_callable

    hook = import_callable(hook_ref, "labeler")
    with open(queue / "queue.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    labels = list(hook(queue))
    if len(labels) != len(lines):
        raise EdgekitError(f"the labeler {hook_ref} returned {len(labels)} labels for {len(lines)} queued examples",
                           "return one label (or None) per line of queue.csv")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_FIELDS)
    writer.writeheader()
    for line, label in zip(lines, labels):
        writer.writerow({**line, "label": "" if label is None else str(label)})
    atomic_write_text(out, buffer.getvalue())
    return {"labelled": sum(label is not None for label in labels)}
