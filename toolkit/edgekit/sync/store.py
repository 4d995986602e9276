"""The device log store: SQLite in WAL mode, one row per prediction, bounded on disk.

Inputs are kept according to a sampling policy; feedback is attached later by request id; the
sync client reads unshipped rows in id order (never the whole backlog) and marks them shipped
only after the collector acknowledged them. A corrupt database is moved aside and logging goes
on in a fresh one; every dropped record is counted.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import sqlite3
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from ..errors import EdgekitError

log = logging.getLogger("edgekit.sync")

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    time REAL NOT NULL,
    model TEXT NOT NULL,
    version TEXT,
    variant TEXT,
    latency_ms REAL,
    fallbacks TEXT,
    outputs TEXT,
    inputs TEXT,
    summary TEXT,
    hold_until REAL NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    shipped INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS records_unshipped ON records (shipped, id);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    time REAL NOT NULL,
    label TEXT,
    outcome TEXT,
    size INTEGER NOT NULL,
    shipped INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS feedback_unshipped ON feedback (shipped, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


_INSERT = ("INSERT INTO records (request_id, time, model, version, variant, latency_ms, fallbacks, outputs, "
           "inputs, summary, hold_until, size) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")


def encode_array(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}


def decode_array(d: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["b64"]), dtype=d["dtype"]).reshape(d["shape"])


@dataclass(frozen=True)
class SamplingPolicy:
    """Which predictions keep their inputs: all, a fraction, low-confidence ones, those that
    get feedback (held for ``feedback_window_s``), or none (summaries only)."""

    mode: Literal["all", "fraction", "low_confidence", "feedback", "none"] = "all"
    fraction: float = 0.1
    confidence_below: float = 0.6
    feedback_window_s: float = 3600.0

    @classmethod
    def parse(cls, text: str) -> "SamplingPolicy":
        """'all', 'none', 'feedback', 'fraction:0.05' or 'low_confidence:0.5'."""
        name, _, arg = text.partition(":")
        try:
            if name == "fraction":
                return cls("fraction", fraction=float(arg))
            if name == "low_confidence":
                return cls("low_confidence", confidence_below=float(arg))
            if name in ("all", "none", "feedback"):
                return cls(name)
        except ValueError:
            pass
        raise EdgekitError(f"bad sampling policy {text!r}",
                           "use all, none, feedback, fraction:0.05 or low_confidence:0.5")


def _confidence(outputs: dict) -> Optional[float]:
    first = next(iter(outputs.values()), None)
    if first is None or first.ndim != 2:
        return None
    z = first.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return float((z / z.sum(axis=1, keepdims=True)).max(axis=1).min())  # softmax top-1, worst row


def _flusher(ref, interval: float) -> None:
    """Commits a store's buffered appends once they are ``interval`` old; holds only a weak
    reference, so a store that is dropped without close() is still collected."""
    while True:
        time.sleep(interval / 2)
        store = ref()
        if store is None or store._closed:
            return
        if store._buffer and time.monotonic() - store._buffered_since >= interval:
            try:
                store.flush()
            except Exception as exc:  # keep flushing later; the error is reported
                log.error("log store flush failed: %s", exc)
        del store


class LogStore:
    def __init__(self, path: str | Path, max_bytes: int = 512 * 1024 * 1024,
                 when_full: Literal["drop_oldest", "refuse"] = "drop_oldest",
                 sampling: SamplingPolicy | str = SamplingPolicy(), seed: Optional[int] = None,
                 flush_ms: float = 10.0):
        """``flush_ms``: appends are committed in groups at most this old (Vector flushes its
        disk buffer every 500 ms); a process crash can lose at most that window. 0 commits
        every record on its own (about half the append rate)."""
        if when_full not in ("drop_oldest", "refuse"):
            raise EdgekitError(f"unknown when_full policy {when_full!r}", "use drop_oldest or refuse")
        self.path = Path(path)
        self.max_bytes, self.when_full = max_bytes, when_full
        self.sampling = SamplingPolicy.parse(sampling) if isinstance(sampling, str) else sampling
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self.flush_ms = flush_ms
        self._buffer: list[tuple] = []
        self._buffered_since = 0.0
        self._closed = False
        if flush_ms > 0:
            threading.Thread(target=_flusher, args=(weakref.ref(self), flush_ms / 1000),
                             name="edgekit-logstore-flush", daemon=True).start()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = self._open()
        # Bytes in use are derived from the rows at start-up and kept in memory after that.
        self._used = sum(self.db.execute(f"SELECT COALESCE(SUM(size), 0) FROM {t}").fetchone()[0]
                         for t in ("records", "feedback"))

    # -- opening, with recovery from corruption -------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash; only power loss can undo the
        # last transactions. FULL would fsync every prediction.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        return db

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("log store %s is corrupt (%s); moved aside to %s, starting a fresh one", self.path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    os.replace(src, f"{aside}{suffix}")
            self.recovered_from = str(aside)
            return self._connect()

    # -- counters ---------------------------------------------------------------------------
    def _meta(self, key: str) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else 0

    def _bump(self, key: str, by: int) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value", (key, by))

    @property
    def dropped(self) -> int:
        return self._meta("dropped")

    @property
    def used_bytes(self) -> int:
        return self._used

    # -- writing ----------------------------------------------------------------------------
    def _keep_inputs(self, outputs: dict) -> tuple[bool, float]:
        """(keep the inputs?, hold the record until) under the sampling policy."""
        s = self.sampling
        if s.mode == "all":
            return True, 0.0
        if s.mode == "fraction":
            return self._rng.random() < s.fraction, 0.0
        if s.mode == "low_confidence":
            conf = _confidence(outputs)
            return conf is not None and conf < s.confidence_below, 0.0
        if s.mode == "feedback":
            return True, time.time() + s.feedback_window_s  # kept only if feedback arrives in time
        return False, 0.0

    def append(self, inputs: dict, outputs: dict, model: str, version: str = "", variant: str = "",
               latency_ms: float = 0.0, fallbacks: Optional[list] = None, request_id: Optional[str] = None) -> Optional[str]:
        """Log one prediction; returns its request id, or None when refused (store full)."""
        request_id = request_id or uuid.uuid4().hex
        keep, hold = self._keep_inputs(outputs)
        summary = None
        if not keep or hold:  # inputs that may not ship still leave their summary statistics
            summary = json.dumps({k: {"shape": list(v.shape), "mean": float(np.mean(v)), "std": float(np.std(v)),
                                      "min": float(np.min(v)), "max": float(np.max(v))} for k, v in inputs.items()})
        row = (request_id, time.time(), model, version, variant, float(latency_ms), json.dumps(fallbacks or []),
               json.dumps({k: encode_array(v) for k, v in outputs.items()}),
               json.dumps({k: encode_array(v) for k, v in inputs.items()}) if keep else None,
               summary, hold)
        size = sum(len(x) for x in row if isinstance(x, str)) + 64
        with self._lock:
            if self._used + size <= self.max_bytes:
                self._used += size
                if self.flush_ms <= 0:
                    self.db.execute(_INSERT, row + (size,))  # autocommit: one statement, one transaction
                    return request_id
                if not self._buffer:
                    self._buffered_since = time.monotonic()
                self._buffer.append(row + (size,))
                if len(self._buffer) >= 512:
                    self._flush()
                return request_id
            self._flush()
            self.db.execute("BEGIN IMMEDIATE")  # full: making room and inserting commit together
            try:
                if not self._make_room(size):
                    self._bump("dropped", 1)
                    self.db.execute("COMMIT")
                    return None
                self.db.execute(_INSERT, row + (size,))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self._used += size
        return request_id

    def _flush(self) -> None:
        """Commit buffered appends in one transaction (caller holds the lock)."""
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(_INSERT, rows)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            self._used -= sum(r[-1] for r in rows)
            raise

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _make_room(self, size: int) -> bool:
        if self.when_full == "refuse":
            return False
        # drop the oldest records (shipped or not) until the new one fits; each drop is counted
        need = self._used + size - self.max_bytes
        freed = dropped = 0
        for rid, rsize, shipped in self.db.execute("SELECT id, size, shipped FROM records ORDER BY id"):
            if freed >= need:
                break
            freed += rsize
            dropped += 0 if shipped else 1
            last = rid
        if freed < need:
            return False
        self.db.execute("DELETE FROM records WHERE id <= ?", (last,))
        self._used -= freed
        self._bump("dropped", dropped)
        return True

    def feedback(self, request_id: str, label=None, outcome=None) -> None:
        body = (json.dumps(label) if label is not None else None, outcome)
        size = sum(len(x) for x in body if x) + 32
        with self._lock:
            self._flush()
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT INTO feedback (request_id, time, label, outcome, size) VALUES (?,?,?,?,?)",
                            (request_id, time.time(), body[0], outcome, size))
            # a record held for feedback keeps its inputs and is released for shipping now
            self.db.execute("UPDATE records SET hold_until = 0 WHERE request_id = ?", (request_id,))
            self.db.execute("COMMIT")
            self._used += size

    # -- reading for the sync client ----------------------------------------------------------
    def next_batch(self, limit: int) -> tuple[list[dict], list[dict]]:
        """Up to ``limit`` unshipped records (held ones excepted) and pending feedback, in id order."""
        now = time.time()
        with self._lock:
            self._flush()
            # records whose feedback window passed without feedback lose their inputs first
            if self.sampling.mode == "feedback":
                self.db.execute("UPDATE records SET inputs = NULL, hold_until = 0 WHERE shipped = 0 AND "
                                "hold_until > 0 AND hold_until <= ?", (now,))
            rows = self.db.execute(
                "SELECT id, request_id, time, model, version, variant, latency_ms, fallbacks, outputs, inputs, summary "
                "FROM records WHERE shipped = 0 AND hold_until <= ? ORDER BY id LIMIT ?", (now, limit)).fetchall()
            fb = self.db.execute("SELECT id, request_id, time, label, outcome FROM feedback WHERE shipped = 0 "
                                 "ORDER BY id LIMIT ?", (limit,)).fetchall()
        records = [{"id": r[0], "request_id": r[1], "time": r[2], "model": r[3], "version": r[4], "variant": r[5],
                    "latency_ms": r[6], "fallbacks": json.loads(r[7]), "outputs": json.loads(r[8]),
                    "inputs": json.loads(r[9]) if r[9] else None, "summary": json.loads(r[10]) if r[10] else None}
                   for r in rows]
        feedback = [{"id": f[0], "request_id": f[1], "time": f[2], "label": json.loads(f[3]) if f[3] else None,
                     "outcome": f[4]} for f in fb]
        return records, feedback

    def mark_shipped(self, record_ids: list[int], feedback_ids: list[int]) -> None:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            for table, ids in (("records", record_ids), ("feedback", feedback_ids)):
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    self.db.execute(f"UPDATE {table} SET shipped = 1 WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            self.db.execute("COMMIT")

    def prune_shipped(self, keep_seconds: float = 0.0) -> int:
        """Delete shipped rows older than ``keep_seconds``; returns how many."""
        cutoff = time.time() - keep_seconds
        with self._lock:
            self._flush()
            self.db.execute("BEGIN IMMEDIATE")
            freed = self.db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM records WHERE shipped = 1 AND time <= ?",
                                    (cutoff,)).fetchone()
            self.db.execute("DELETE FROM records WHERE shipped = 1 AND time <= ?", (cutoff,))
            fb = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM feedback WHERE shipped = 1 AND time <= ?",
                                 (cutoff,)).fetchone()[0]
            self.db.execute("DELETE FROM feedback WHERE shipped = 1 AND time <= ?", (cutoff,))
            self.db.execute("COMMIT")
            self._used -= freed[0] + fb
        return freed[1]

    def stats(self) -> dict:
        with self._lock:
            self._flush()
            pending = self.db.execute("SELECT COUNT(*), MIN(time) FROM records WHERE shipped = 0").fetchone()
            shipped = self.db.execute("SELECT COUNT(*) FROM records WHERE shipped = 1").fetchone()[0]
            fb = self.db.execute("SELECT COUNT(*) FROM feedback WHERE shipped = 0").fetchone()[0]
        return {"pending": pending[0], "oldest_pending": pending[1], "shipped": shipped, "pending_feedback": fb,
                "dropped": self.dropped, "used_bytes": self.used_bytes, "max_bytes": self.max_bytes,
                "recovered_from": getattr(self, "recovered_from", None)}

    def close(self) -> None:
        with self._lock:
            self._flush()
            self._closed = True
            self.db.close()
