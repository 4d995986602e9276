"""The read side for retraining: predictions joined with their feedback, and fleet statistics.

Rows are streamed from the database in chunks (a server-side cursor on PostgreSQL). One bad
stored row (an array that does not decode, a non-finite time) is skipped and reported, never
allowed to break an export or a fleet report.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

from .._io import atomic_write_bytes
from ..errors import EdgekitError
from ..lake.write import SETTLE_S  # how far behind the clock an incremental export stops
from ..monitor.rollups import backlog
from ..sync.record import decode_array
from ..tables import EXPORT_META, OUTPUT_PREFIX
from .db import Database

CHUNK = 2000

# The latest feedback per prediction (ties: the later feedback row), through the feedback index.
_SQL = ("SELECT r.device, d.grp, r.request_id, r.time, r.model, r.version, r.outputs, r.inputs, fb.label, fb.outcome "
        "FROM records r JOIN devices d ON d.name = r.device "
        "LEFT JOIN feedback fb ON fb.device = r.device AND fb.request_id = r.request_id AND fb.received <= ? "
        "AND NOT EXISTS (SELECT 1 FROM feedback g WHERE g.device = fb.device AND g.request_id = fb.request_id "
        "AND g.received <= ? AND (g.time > fb.time OR (g.time = fb.time AND g.feedback_id > fb.feedback_id))) "
        "WHERE r.time >= ? AND r.inputs IS NOT NULL{filters} "
        "ORDER BY r.time, r.device, r.store, r.record_id")
FORMATS = ("npz", "parquet")


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
    """(inputs under their own names, outputs as outputs/<name>, rows)."""
    ins, outs = {}, {}
    for target, prefix, payload in ((ins, "", inputs), (outs, OUTPUT_PREFIX, outputs)):
        for key, value in json.loads(payload).items():
            array = decode_array(value)
            if array.ndim == 0:
                raise ValueError(f"{'inputs' if target is ins else 'outputs'}/{key} is a scalar, not a batch")
            target[prefix + key] = array
    sizes = {len(a) for a in (*ins.values(), *outs.values())}
    if len(sizes) != 1:
        raise ValueError(f"arrays disagree on the number of rows: {sorted(sizes)}")
    if not ins:
        raise ValueError("no inputs")
    clash = [k for k in ins if k in EXPORT_META or k == "labels"]
    if clash:
        raise ValueError(f"input {clash[0]!r} has the name of an export column")
    return ins, outs, sizes.pop()


@dataclass
class _Part:
    """One chunk of exported rows: arrays by column."""

    arrays: dict[str, list]
    columns: dict[str, list]

    @classmethod
    def empty(cls) -> "_Part":
        return cls({}, {k: [] for k in ("request_id", "row", "device", "group", "time", "model", "version", "labels",
                                        "labelled", "outcome")})

    def __len__(self) -> int:
        return len(self.columns["row"])


class _Writer:
    not_classes = 0  # given labels that were not class numbers, left out of the labelled rows

    def add(self, part: _Part) -> None:
        raise NotImplementedError

    def finish(self, out: Path) -> None:
        raise NotImplementedError


class _NpzWriter(_Writer):
    """Everything in memory, then one compressed .npz (what numpy and every --data read)."""

    def __init__(self):
        self.parts: list[_Part] = []

    def add(self, part: _Part) -> None:
        self.parts.append(part)

    def finish(self, out: Path) -> None:
        data = {k: np.concatenate([a for p in self.parts for a in p.arrays[k]]) for k in self.parts[0].arrays}
        for key in self.parts[0].columns:
            data[key] = np.asarray([v for p in self.parts for v in p.columns[key]])
        labels = data["labels"]
        numbers = np.asarray([_class_number(v) for v in labels], dtype=np.int64)
        given = np.asarray([bool(v) for v in labels])
        if (numbers >= 0).any():
            # Class numbers, -1 where a row has no feedback. A given label that is no class number
            # (a typo among thousands) counts as no label, said in the result: it used to turn the
            # whole column into text, which nothing downstream could train on.
            self.not_classes = int((given & (numbers < 0)).sum())
            data["labels"] = numbers
            data["labelled"] = given & (numbers >= 0)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **data)
        atomic_write_bytes(out, buffer.getvalue())


def _class_number(label: str) -> int:
    return int(label) if label.isascii() and label.isdigit() else -1


def _tensor_column(arrays: list[np.ndarray]):
    """Rows of one tensor as nested fixed-size lists (pandas, DuckDB and Spark read them)."""
    import pyarrow as pa

    stacked = np.concatenate(arrays)
    column = pa.array(stacked.reshape(-1))
    for size in reversed(stacked.shape[1:]):
        column = pa.FixedSizeListArray.from_arrays(column, size)
    return column


# The state file of a folder ``export --incremental`` keeps: what it holds, up to when.
LAKE_STATE = "_edgekit_export.json"


class _ParquetWriter(_Writer):
    """Hive-partitioned Parquet (model=NAME/date=YYYY-MM-DD/part-RUN.parquet), streamed: a chunk is
    written as soon as it is read. Labels are text ('' without feedback) next to ``labelled``.
    ``run`` > 0 adds files to an existing lake: each new file is moved in at the end."""

    def __init__(self, out: Path, run: int = 0):
        self.out, self.run = out, run
        self.tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        self.writers: dict[tuple, object] = {}

    def add(self, part: _Part) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.tmp.mkdir(parents=True, exist_ok=True)
        dates = [datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d") for t in part.columns["time"]]
        keys = list(zip(part.columns["model"], dates))
        flat = {name: np.concatenate(chunks) for name, chunks in part.arrays.items()}
        for key in sorted(set(keys)):  # a chunk of rows in time order spans one or two partitions
            rows = np.asarray([i for i, k in enumerate(keys) if k == key])
            columns = {name: _tensor_column([values[rows]]) for name, values in flat.items()}
            for name, values in part.columns.items():
                if name != "model":
                    columns[name] = pa.array([values[i] for i in rows])
            table = pa.table(columns)
            writer = self.writers.get(key)
            if writer is None:
                folder = self.tmp / f"model={key[0]}" / f"date={key[1]}"
                folder.mkdir(parents=True, exist_ok=True)
                writer = self.writers[key] = pq.ParquetWriter(folder / f"part-{self.run}.parquet", table.schema)
            writer.write_table(table)

    def finish(self, out: Path) -> None:
        for writer in self.writers.values():
            writer.close()
        if self.run:  # into the lake, file by file: readers see whole files or none
            for key in self.writers:
                folder = Path("model=" + key[0]) / f"date={key[1]}"
                (out / folder).mkdir(parents=True, exist_ok=True)
                os.replace(self.tmp / folder / f"part-{self.run}.parquet", out / folder / f"part-{self.run}.parquet")
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if out.exists():
            raise EdgekitError(f"{out} appeared while exporting", "export to a new folder")
        self.tmp.mkdir(parents=True, exist_ok=True)  # an empty first run still makes the lake
        os.replace(self.tmp, out)

    def abort(self) -> None:
        for writer in self.writers.values():
            with contextlib.suppress(Exception):
                writer.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _lake_state(out: Path) -> dict:
    """The state of a lake ``export --incremental`` made, or an error naming what is wrong."""
    try:
        state = json.loads((out / LAKE_STATE).read_text())
        return {"runs": int(state["runs"]), "received_until": float(state["received_until"]),
                "filters": dict(state["filters"])}
    except FileNotFoundError:
        raise EdgekitError(f"{out} exists and is not a lake edgekit's incremental export made (no {LAKE_STATE})",
                           "export to a new folder; edgekit never writes into one it did not make") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise EdgekitError(f"{out / LAKE_STATE} is unreadable ({exc})", "export to a new folder") from None


def export(db: Database, out: str | Path, since: Optional[str] = None, model: Optional[str] = None,
           version: Optional[str] = None, fmt: str = "npz", labelled_only: bool = False,
           progress=None, until: Optional[float] = None, as_of: Optional[float] = None,
           incremental: bool = False) -> dict:
    """One row per predicted sample: the model's inputs under their own names (what every
    ``--data`` reads), ``outputs/<name>``, and per row ``labels`` (-1 or '' without feedback),
    ``labelled``, request_id, row (its index inside a batch prediction), device, group, time,
    model, version and outcome. ``fmt``: an .npz file, or a folder of Parquet partitions.
    ``until``: predictions made before this time; ``as_of``: only what the collector had received by
    then (records and feedback), so that a data set can be rebuilt exactly later."""
    if fmt not in FORMATS:
        raise EdgekitError(f"unknown export format {fmt!r}", f"use {' or '.join(FORMATS)}")
    out = Path(out)
    if incremental and fmt != "parquet":
        raise EdgekitError("--incremental adds to a Parquet lake", "use --format parquet")
    state, wanted = None, {"since": since, "model": model, "version": version, "labelled_only": labelled_only}
    if incremental:
        # A lake grows by the records received since its last run, up to a minute ago (SETTLE_S).
        as_of = min(as_of if as_of is not None else math.inf, time.time() - SETTLE_S)
        if out.exists():
            state = _lake_state(out)
            if state["filters"] != wanted:
                raise EdgekitError(f"{out} was exported with {state['filters']}, not {wanted}",
                                   "run with the lake's own filters, or export to a new folder")
    elif fmt == "parquet" and out.exists():
        raise EdgekitError(f"{out} exists", "export Parquet to a new folder (edgekit never writes into one it did not make)")
    end = math.inf if as_of is None else as_of
    params: list = [end, end, parse_time(since)]
    filters = ""
    if state is not None:
        filters += " AND r.received > ?"
        params.append(state["received_until"])
    if until is not None:
        filters += " AND r.time < ?"
        params.append(until)
    if as_of is not None:
        filters += " AND r.received <= ?"
        params.append(as_of)
    if model:
        filters += " AND r.model = ?"
        params.append(model)
    if version:
        filters += " AND r.version = ?"
        params.append(version)
    if labelled_only:
        filters += " AND fb.label IS NOT NULL AND fb.label <> 'null'"
    run = state["runs"] + 1 if state else 0
    writer: _Writer = _NpzWriter() if fmt == "npz" else _ParquetWriter(out, run)
    signature = None
    skipped: Counter = Counter()
    records = ambiguous = rows_out = labelled = 0
    try:
        with db.read() as tx:
            for chunk in tx.stream(_SQL.format(filters=filters), tuple(params), CHUNK):
                part = _Part.empty()
                for device, group, request_id, when, name, ver, outputs, inputs, label, outcome in chunk:
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
                    if labelled_only and not all(labels):
                        skipped["a batch prediction's label does not cover its rows"] += 1
                        continue
                    for key, value in {**ins, **outs}.items():
                        part.arrays.setdefault(key, []).append(value)
                    ambiguous += unplaced
                    records += 1
                    c = part.columns
                    c["request_id"] += [request_id] * rows
                    c["row"] += list(range(rows))
                    c["device"] += [device] * rows
                    c["group"] += [group or ""] * rows
                    c["time"] += [when] * rows
                    c["model"] += [name] * rows
                    c["version"] += [ver or ""] * rows
                    c["labels"] += labels
                    c["labelled"] += [bool(v) for v in labels]
                    c["outcome"] += [outcome or ""] * rows
                if len(part):
                    writer.add(part)
                    rows_out += len(part)
                    labelled += sum(part.columns["labelled"])
                    if progress:
                        progress(rows_out)
        if not records and not incremental:
            bad = f" ({sum(skipped.values())} unreadable rows skipped)" if skipped else ""
            raise EdgekitError(f"no logged predictions with inputs match{bad}",
                               "widen --since/--model, or check the sampling policy")
        writer.finish(out)
        if incremental:  # the watermark moves only once the run's files are in
            atomic_write_bytes(out / LAKE_STATE, json.dumps(
                {"runs": run if records else (state["runs"] if state else 0), "received_until": as_of,
                 "filters": wanted}).encode())
    except BaseException:
        if isinstance(writer, _ParquetWriter):
            writer.abort()
        raise
    not_classes = getattr(writer, "not_classes", 0)
    if signature is None:  # an incremental run with nothing new
        return {"records": 0, "rows": 0, "labelled": 0, "file": str(out), "format": fmt, "run": None,
                "received_until": as_of, "skipped": sum(skipped.values()), "skipped_reasons": dict(skipped)}
    return {"run": run if incremental else None, "records": records, "rows": rows_out, "labelled": labelled - not_classes, "labels_unplaced": ambiguous,
            "labels_not_classes": not_classes,
            "skipped": sum(skipped.values()), "skipped_reasons": dict(skipped), "file": str(out), "format": fmt,
            "inputs": sorted(k for k, _, _ in signature if not k.startswith(OUTPUT_PREFIX)),
            "outputs": sorted(k for k, _, _ in signature if k.startswith(OUTPUT_PREFIX))}


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
        waiting = backlog(tx)
    totals: dict[str, int] = {}
    for device, _, count, _ in per:
        totals[device] = totals.get(device, 0) + count
    return {
        "by_device_model": [{"device": d, "model": m, "records": n, "last_record": _finite(t)} for d, m, n, t in per],
        "devices": [{"device": name, "revoked": bool(rev), "last_seen": _finite(seen), "records": totals.get(name, 0),
                     "feedback_rate": (fb.get(name, 0) / totals[name]) if totals.get(name) else 0.0}
                    for name, rev, seen in devices],
        "invalid_rows": invalid,
        "rollup_backlog": waiting,
    }
