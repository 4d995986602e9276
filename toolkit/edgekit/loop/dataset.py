"""Dataset formation: what a retrained model learns from.

New labelled data from the fleet (curated labels and users' corrections, as the collector held
them at ``as_of``) + the always-keep set + a reservoir sample of earlier data (so that retraining
on the new does not forget the old), deduplicated by content hash (keep first, then new, then
history), class-balanced if asked, and split train/validation/test by time: the newest fleet data
is the test split, so nothing from the future leaks into training. Earlier data and the keep set
are older than any fleet row and go to training.

A data set is a folder of ``train.npz``, ``val.npz``, ``test.npz`` and ``manifest.json`` (its
sources, the query, counts per split, source and class, and a content hash per split);
``rebuild`` forms it again from the manifest and checks every hash.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np

from .._io import atomic_directory, sha256_file
from ..errors import EdgekitError
from ..tables import known_labels, load_columns, open_table
from ..testing.expect import combined_row_hashes
from .config import DatasetSpec

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
SOURCES = ("keep", "curated", "feedback", "history")


def arrays_hash(columns: dict[str, np.ndarray]) -> str:
    """A hash of the arrays themselves (names, dtypes, shapes, bytes): .npz files carry zip
    timestamps, so equal data sets need not be equal files."""
    h = hashlib.sha256()
    for name in sorted(columns):
        a = np.ascontiguousarray(columns[name])
        if a.dtype == object:
            a = a.astype(str)
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _part(columns: dict, inputs: list[str], source: str, labels: np.ndarray, time_: Optional[np.ndarray] = None,
          group: Optional[np.ndarray] = None) -> dict:
    n = len(labels)
    return {**{k: np.asarray(columns[k]) for k in inputs}, "labels": labels.astype(np.int64),
            "source": np.array([source] * n, dtype=object),
            "time": np.full(n, -np.inf) if time_ is None else np.asarray(time_, np.float64),
            "group": np.array([""] * n, dtype=object) if group is None else np.asarray(group, dtype=object)}


def _reservoir(paths: list[Path], inputs: list[str], size: int, seed: int) -> Optional[dict]:
    """``size`` rows drawn uniformly from all of ``paths`` in one streaming pass (algorithm R,
    vectorised per chunk): the earlier data never has to fit in memory."""
    if size <= 0 or not paths:
        return None
    rng = np.random.default_rng(seed)
    held: Optional[dict] = None
    seen = 0
    for path in paths:
        for chunk in open_table(path).chunks():
            labels, known = known_labels(chunk, str(path))
            chunk = {**{k: chunk[k][known] for k in inputs}, "labels": labels[known]}
            n = len(chunk["labels"])
            filled = 0 if held is None else len(held["labels"])
            take = min(size - filled, n)
            if take > 0:
                head = {k: v[:take].copy() for k, v in chunk.items()}
                held = head if held is None else {k: np.concatenate([held[k], head[k]]) for k in held}
            rows = np.arange(max(take, 0), n)
            slots = rng.integers(0, seen + rows + 1) if len(rows) else rows
            for r, j in zip(rows[slots < size], slots[slots < size]):  # in order: later rows overwrite
                for k in held:
                    held[k][j] = chunk[k][r]
            seen += n
    return held


def form_dataset(new_data: Optional[str | Path], out: str | Path, inputs: list[str], spec: DatasetSpec,
                 keep: list[Path] = (), history: list[Path] = (), query: Optional[dict] = None) -> dict:
    """Write a data set folder (atomically) and return its manifest."""
    parts = []
    for path in keep:
        cols = load_columns(path)
        parts.append(_part(cols, inputs, "keep", known_labels(cols, str(path))[0]))
    if new_data is not None:
        cols = load_columns(new_data)
        labels, known = known_labels(cols, str(new_data))
        cols = {k: v[known] for k, v in cols.items()}
        curated = np.asarray([o == "labelled" for o in cols.get("outcome", [""] * len(labels[known]))], bool)
        fresh = _part(cols, inputs, "feedback", labels[known], cols.get("time"), cols.get("group"))
        fresh["source"][curated] = "curated"
        if spec.balance and len(fresh["labels"]):
            fresh = _balanced(fresh, spec.seed)
        parts.append(fresh)
    sampled = _reservoir(list(history), inputs, spec.history, spec.seed)
    if sampled is not None:
        parts.append(_part(sampled, inputs, "history", sampled["labels"]))
    if not parts:
        raise EdgekitError("a data set needs data", "label some predictions, or give base_data")
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    hashes = combined_row_hashes(data, sorted(inputs))
    # A fleet row that repeats earlier data is known data: it trains, never tests (the current
    # model may have learnt it, which would tilt the gate towards the current model).
    known = np.isin(hashes, hashes[np.isin(data["source"], ("keep", "history"))])
    data["time"][known] = -np.inf
    _, first = np.unique(hashes, return_index=True)  # the first occurrence wins: keep, new, history
    unique = np.sort(first)
    duplicates = len(hashes) - len(unique)
    data = {k: v[unique] for k, v in data.items()}
    split = _split_by_time(data["time"], data["source"], spec.split)
    manifest = {"schema_version": SCHEMA_VERSION, "created": time.time(), "query": query or {},
                "spec": {"history": spec.history, "balance": spec.balance, "split": list(spec.split), "seed": spec.seed},
                "inputs": inputs, "duplicates_dropped": int(duplicates),
                "keep": [{"file": str(p), "sha256": sha256_file(p)} for p in keep],
                "history": [{"file": str(p), "sha256": sha256_file(p) if Path(p).is_file() else None} for p in history],
                "splits": {}}
    with atomic_directory(out) as tmp:
        for name in SPLITS:
            rows = split == name
            columns = {k: v[rows] for k, v in data.items()}
            columns["time"] = np.where(np.isfinite(columns["time"]), columns["time"], 0.0)
            saved = {k: (v.astype(str) if v.dtype == object else v) for k, v in columns.items()}
            np.savez(tmp / f"{name}.npz", **saved)
            manifest["splits"][name] = {
                "rows": int(rows.sum()), "sha256": arrays_hash(saved),
                "sources": dict(Counter(columns["source"].tolist())),
                "classes": {str(k): v for k, v in sorted(Counter(columns["labels"].tolist()).items())},
                "groups": dict(Counter(g for g in columns["group"].tolist() if g))}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _balanced(part: dict, seed: int) -> dict:
    """Down-sampled to the rarest class's count (newest rows kept)."""
    counts = Counter(part["labels"].tolist())
    least = min(counts.values())
    keep = []
    for c in counts:
        rows = np.flatnonzero(part["labels"] == c)
        keep.append(rows[np.argsort(-part["time"][rows], kind="stable")][:least])
    rows = np.sort(np.concatenate(keep))
    return {k: v[rows] for k, v in part.items()}


def _split_by_time(times: np.ndarray, sources: np.ndarray, shares) -> np.ndarray:
    """Fleet rows by time: the oldest ``shares[0]`` train, the next validate, the newest test.
    Rows without a time (keep, history) train."""
    out = np.array(["train"] * len(times), dtype=object)
    fleet = np.flatnonzero(np.isfinite(times))
    order = fleet[np.argsort(times[fleet], kind="stable")]
    n = len(order)
    a, b = int(round(shares[0] * n)), int(round((shares[0] + shares[1]) * n))
    out[order[a:b]] = "val"
    out[order[b:]] = "test"
    return out


def new_data_export(db, model: str, since: float, until: float, as_of: float, out: Path) -> Optional[Path]:
    """The fleet's labelled predictions in [since, until) as the collector held them at ``as_of``
    (None when there are none)."""
    from ..collector.export import export

    try:
        export(db, out, since=str(since), model=model, labelled_only=True, until=until, as_of=as_of)
    except EdgekitError as exc:
        if "no logged predictions" in str(exc):
            return None
        raise
    return out


def rebuild(manifest_path: str | Path, out: str | Path, db=None) -> dict:
    """Form a data set again from its manifest and check that every split hashes the same."""
    manifest_path = Path(manifest_path)
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise EdgekitError(f"{manifest_path} is not a data set manifest of schema {SCHEMA_VERSION}")
    for item in manifest["keep"] + [h for h in manifest["history"] if h["sha256"]]:
        if not Path(item["file"]).is_file() or sha256_file(item["file"]) != item["sha256"]:
            raise EdgekitError(f"{item['file']} changed since the data set was formed", "restore it to rebuild")
    query = manifest["query"]
    spec = DatasetSpec(**{**manifest["spec"], "split": tuple(manifest["spec"]["split"])})
    with tempfile.TemporaryDirectory() as tmp:
        new = None
        if query.get("model") and db is not None:
            new = new_data_export(db, query["model"], query["since"], query["until"], query["as_of"],
                                  Path(tmp) / "new.npz")
        again = form_dataset(new, out, manifest["inputs"], spec, [Path(k["file"]) for k in manifest["keep"]],
                             [Path(h["file"]) for h in manifest["history"]], query)
    differ = [s for s in SPLITS if again["splits"][s]["sha256"] != manifest["splits"][s]["sha256"]]
    if differ:
        raise EdgekitError(f"the rebuilt {', '.join(differ)} split differs from the manifest",
                           "the collector's records for the query changed (deleted or rewritten)")
    return again
