"""Propose an expectation suite from reference data, like Great Expectations' profiler: a person
reads and edits it; ``edgekit test expect run`` then holds new data to it.

One pass over the reference (chunked) collects per column: dtype, row shape, missing share,
range, small value sets, class shares, uniqueness and order; the suite follows from them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .expect import (AllowedValues, Dtype, LabelDistribution, MaskMatchesPadding, MatchesReference, Monotonic,
                     NoMissing, NotInFuture, Present, Range, RowCount, Shape, Suite, Unique, dtype_name, row_hashes,
                     run_suite)
from ..tables import open_table
from ..errors import DataError

LABELS = ("labels", "label")
TIME = ("time", "timestamp")
MAX_SET = 64  # a column with at most this many distinct values is categorical


def suggest(data: str | Path, name: str | None = None, chunk: int = 65536, key: str | None = None) -> Suite:
    """``key``: a column identifying rows; the labels are then also held to this (trusted) data
    by key, which catches shuffled or corrupted labels whose distribution did not change."""
    table = open_table(data, chunk)
    stats: dict[str, dict] = {}
    rows = 0
    for part in table.chunks():
        rows += len(next(iter(part.values()))) if part else 0
        for column, values in part.items():
            _observe(stats.setdefault(column, _empty(values)), values)
    checks = [Present(columns=tuple(table.columns)), RowCount(min=max(1, rows // 10))]
    for column, st in stats.items():
        checks += _checks_for(column, st, stats, identity=column == key or column in IDS)
    tensors = tuple(c for c, st in stats.items() if st["shape"] and not c.startswith("outputs/"))
    if tensors:
        # Repeated samples (all inputs of a row alike): no more than the reference had, plus a
        # little, so that a pipeline writing the same sample twice is caught.
        result = run_suite(Suite("probe", (Unique(columns=tensors),)), data, chunk).outcomes[0]
        share = result.failing_rows / max(result.rows, 1)
        checks.append(Unique(columns=tensors, mostly=round(max(0.0, 1 - share - 0.001), 4)))
    if key is not None:
        if key not in stats:
            raise DataError(f"--key {key} is not a column of {data}", f"its columns are {', '.join(stats)}")
        for label in (c for c in LABELS if c in stats):
            checks.append(MatchesReference(column=label, key=key, reference=str(Path(data).resolve())))
    return Suite(name or Path(data).stem, tuple(checks))


def _empty(values: np.ndarray) -> dict:
    return {"dtype": dtype_name(values.dtype), "shape": tuple(values.shape[1:]), "rows": 0, "missing": 0, "lo": math.inf,
            "hi": -math.inf, "values": {}, "too_many": False, "hashes": [], "sorted": True, "last": -math.inf}


def _observe(st: dict, values: np.ndarray) -> None:
    st["rows"] += len(values)
    if values.dtype.kind in "fc":
        flat = values.reshape(len(values), -1)
        finite = np.isfinite(flat)
        st["missing"] += int((~finite.all(axis=1)).sum())
        if finite.any():
            st["lo"], st["hi"] = min(st["lo"], float(flat[finite].min())), max(st["hi"], float(flat[finite].max()))
    elif values.dtype.kind in "iub" and values.size:
        st["lo"], st["hi"] = min(st["lo"], float(values.min())), max(st["hi"], float(values.max()))
    if values.ndim == 1 and values.dtype.kind in "f" and len(values):
        st["sorted"] &= bool((np.diff(values) >= 0).all() and values[0] >= st["last"])
        st["last"] = float(values[-1])
    if not st["too_many"] and (values.dtype.kind in "iubUO" and values.ndim == 1):
        uniq, counts = np.unique(np.asarray([str(v) for v in values], dtype=object), return_counts=True)
        for v, c in zip(uniq, counts):
            st["values"][v] = st["values"].get(v, 0) + int(c)
        st["too_many"] = len(st["values"]) > MAX_SET
    if values.ndim == 1 and values.dtype.kind in "UO":
        st["hashes"].append(row_hashes(values))  # ids: unique?


IDS = ("request_id", "key", "id")  # columns that name rows: new data brings new ids


def _checks_for(column: str, st: dict, stats: dict, identity: bool = False) -> list:
    """Checks for one column; an ``identity`` column (the --key, an id) gets its type and
    uniqueness, never the values seen here (new rows have new ids, so a range would fail them)."""
    checks = [Dtype(column=column, dtypes=(st["dtype"],)), Shape(column=column, shape=st["shape"])]
    if identity:
        return checks + _unique(column, st)
    if st["dtype"][0] in "fc" or st["dtype"] == "object":
        share_ok = 1.0 - st["missing"] / max(st["rows"], 1)
        checks.append(NoMissing(column=column, mostly=round(share_ok, 4)))
    categorical = not st["too_many"] and st["values"] and (column in LABELS or st["dtype"] in ("object", "bool")
                                                          or st["dtype"].startswith("<U") or len(st["values"]) <= 20)
    if categorical and not column.startswith(("inputs/", "outputs/")) and st["dtype"][0] not in "f":
        checks.append(AllowedValues(column=column, values=tuple(sorted(st["values"]))))
        if column in LABELS:
            total = sum(st["values"].values())
            shares = {}
            for value, count in st["values"].items():
                p = count / total
                tolerance = max(0.05, 3 * math.sqrt(p * (1 - p) / max(total, 1)))
                shares[value] = (round(max(0.0, p - tolerance), 4), round(min(1.0, p + tolerance), 4))
            checks.append(LabelDistribution(column=column, shares=shares))
    elif math.isfinite(st["lo"]) and st["dtype"][0] in "fiu" and column not in TIME:
        checks.append(Range(column=column, min=_round_down(st["lo"]), max=_round_up(st["hi"])))
    if column == "attention_mask" and "input_ids" in stats:
        checks.append(MaskMatchesPadding(column=column, ids="input_ids"))
    if column in TIME and math.isfinite(st["lo"]):
        checks.append(NotInFuture(column=column))
        if st["sorted"]:
            checks.append(Monotonic(column=column))
    return checks


def _unique(column: str, st: dict) -> list:
    if st["hashes"]:
        hashes = np.concatenate(st["hashes"])
        if len(np.unique(hashes)) == len(hashes):
            return [Unique(column=column)]
    return []


def _round_down(v: float) -> float:
    return float(math.floor(v)) if float(v).is_integer() or abs(v) >= 1 else round(v - 1e-6, 6)


def _round_up(v: float) -> float:
    return float(math.ceil(v)) if float(v).is_integer() or abs(v) >= 1 else round(v + 1e-6, 6)
