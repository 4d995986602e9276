"""What the collector derives from each record as it arrives: per-record signal columns (for
proxies, feedback accuracy and curation queries in SQL) and sketch counts per model, version,
device, hour, feature and bucket (for drift, quantiles and data quality).

Records are grouped by the shape of their arrays and computed a group at a time, so a batch of
a thousand predictions costs a few numpy calls, not a thousand.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from typing import Iterable, Optional

import numpy as np

from ..sync.record import decode_array
from ..features import RECORD, input_features, input_hash, output_signals, summary_features
from .sketch import bucket_of

HOUR = 3600


@dataclass(frozen=True)
class Derived:
    rows: int
    top_class: Optional[int]
    confidence: Optional[float]
    margin: Optional[float]
    entropy: Optional[float]
    out_norm: Optional[float]
    nonfinite: int
    out_hash: Optional[str]
    in_hash: Optional[str] = None

    def columns(self) -> tuple:
        return (self.rows, self.top_class, self.confidence, self.margin, self.entropy, self.out_norm, self.nonfinite,
                self.out_hash, self.in_hash)


COLUMNS = ("rows", "top_class", "confidence", "margin", "entropy", "out_norm", "nonfinite", "out_hash", "in_hash")
EMPTY = Derived(0, None, None, None, None, None, 0, None, None)


@dataclass(frozen=True)
class Item:
    """One record as derive() needs it (from a fresh batch or from a stored row)."""

    model: str
    version: str
    time: float
    latency_ms: Optional[float]
    outputs: dict  # name -> encoded array
    inputs: Optional[dict]  # name -> encoded array, or None
    summary: Optional[dict]


def _decode(encoded: Optional[dict]) -> Optional[dict]:
    if not encoded:
        return None
    try:
        arrays = {k: decode_array(v) for k, v in encoded.items()}
    except (ValueError, TypeError, KeyError):
        return None
    return arrays if all(a.ndim >= 1 for a in arrays.values()) else None


def _signature(arrays: dict) -> tuple:
    return tuple((k, v.dtype.str, v.shape[1:]) for k, v in arrays.items())


def _num(x) -> Optional[float]:
    x = float(x)
    return x if math.isfinite(x) else None


def _per_record(sig: dict, lo: int, hi: int) -> Derived:
    rows = hi - lo

    def col(key):
        return sig[key][lo:hi] if key in sig else None

    conf, margin, ent, norm = col("out.confidence"), col("out.margin"), col("out.entropy"), col("out.norm")
    classes, hashes = col("out.class"), sig["hash"][lo:hi]
    with np.errstate(all="ignore"):
        return Derived(
            rows=rows,
            top_class=int(classes[0]) if classes is not None and rows == 1 and classes[0] >= 0 else None,
            confidence=_num(np.nanmin(conf)) if conf is not None and not np.isnan(conf).all() else None,
            margin=_num(np.nanmin(margin)) if margin is not None and not np.isnan(margin).all() else None,
            entropy=_num(np.nanmax(ent)) if ent is not None and not np.isnan(ent).all() else None,
            out_norm=_num(np.nanmean(norm)) if norm is not None and not np.isnan(norm).all() else None,
            nonfinite=int(sig["nonfinite"][lo:hi].any()),
            out_hash=str(hashes[0]) if rows == 1 else hashlib.blake2b("".join(hashes).encode(), digest_size=8).hexdigest(),
        )


def _single_rows(sig: dict) -> list[Derived]:
    n = len(sig["hash"])
    none = [None] * n

    def floats(key):
        return [_num(x) for x in sig[key].tolist()] if key in sig else none

    classes = [c if c >= 0 else None for c in sig["out.class"].tolist()] if "out.class" in sig else none
    return [Derived(1, *row) for row in zip(classes, floats("out.confidence"), floats("out.margin"),
                                            floats("out.entropy"), floats("out.norm"), sig["nonfinite"].tolist(),
                                            sig["hash"].tolist())]


def derive(items: list[Item]) -> tuple[list[Derived], Counter]:
    """(per-record signals in the order given, sketch counts keyed (model, version, hour, feature, bucket))."""
    derived: list[Derived] = [EMPTY] * len(items)
    counts: Counter = Counter()
    features: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))  # (model, version, hour) -> arrays
    scalars: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))  # ... -> one float per record

    def key_of(item: Item) -> tuple:
        return (item.model, item.version or "", int(item.time // HOUR) * HOUR)

    hashes: list[Optional[str]] = [None] * len(items)
    by_output: dict[tuple, list[tuple[int, dict]]] = defaultdict(list)
    by_input: dict[tuple, list[tuple[int, dict]]] = defaultdict(list)
    for i, item in enumerate(items):
        key = key_of(item)
        if item.latency_ms is not None:
            scalars[key]["sys.latency_ms"].append(item.latency_ms)
        outputs = _decode(item.outputs)
        if outputs:
            by_output[(key, _signature(outputs))].append((i, outputs))
        inputs = _decode(item.inputs)
        hashes[i] = _input_hash(inputs, item.summary)
        if inputs:
            by_input[(key, _signature(inputs))].append((i, inputs))
        elif item.summary:
            for name, value in summary_features(item.summary).items():
                scalars[key][name].append(value)
    for (key, _), group in by_output.items():
        stacked = {name: np.concatenate([arrays[name] for _, arrays in group]) for name in group[0][1]}
        sig = output_signals(stacked)
        if not sig:
            continue
        sizes = [len(next(iter(arrays.values()))) for _, arrays in group]
        if max(sizes) == 1:  # the usual case, one prediction per record: no per-record numpy calls
            for (i, _), row in zip(group, _single_rows(sig)):
                derived[i] = row
        else:
            start = 0
            for (i, _), rows in zip(group, sizes):
                derived[i] = _per_record(sig, start, start + rows)
                start += rows
        for name, values in sig.items():
            if name.startswith("out."):
                features[key][name].append(values)
    for (key, _), group in by_input.items():
        for name in group[0][1]:
            stacked = np.concatenate([arrays[name] for _, arrays in group])
            for fname, values in input_features(name, stacked).items():
                features[key][f"in.{fname}"].append(values)
    for key, named in scalars.items():
        for name, values in named.items():
            features[key][name].append(np.asarray(values, dtype=np.float64))
    for key, named in features.items():
        for name, parts in named.items():
            values = np.concatenate(parts) if len(parts) > 1 else parts[0]
            if values.dtype.kind == "f":
                values = values[np.isfinite(values)]
            if name == "out.class":
                values = values[values >= 0]
            if not len(values):
                continue
            buckets, n = np.unique(bucket_of(name, values), return_counts=True)
            for b, c in zip(buckets.tolist(), n.tolist()):
                counts[key + (name, b)] += c
    derived = [replace(d, in_hash=h) if h is not None else d for d, h in zip(derived, hashes)]
    return derived, counts


def _input_hash(inputs: Optional[dict], summary: Optional[dict]) -> Optional[str]:
    """The record's input hash: over the inputs it shipped, else the one its summary carries
    (None for a device too old to send one)."""
    if inputs:
        return str(input_hash(inputs))
    value = ((summary or {}).get(RECORD) or {}).get("hash")
    return str(int(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def item_from_row(model, version, time_, latency_ms, outputs_text, inputs_text, summary_text) -> Item:
    """A stored record as an Item (for the migration's backfill)."""
    def load(text):
        try:
            return json.loads(text) if text else None
        except ValueError:
            return None

    return Item(model, version or "", time_, latency_ms, load(outputs_text) or {}, load(inputs_text),
                load(summary_text))


def sketch_rows(device: str, counts: Counter) -> Iterable[tuple]:
    """Rows for the sketches upsert, in key order: concurrent writers lock rows in one order."""
    for (model, version, hour, feature, bucket), n in sorted(counts.items()):
        yield (model, version, device, hour, feature, bucket, n)
