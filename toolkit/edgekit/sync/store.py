"""The device log store: SQLite in WAL mode, one row per prediction, bounded on disk.

Inputs are kept according to a sampling policy; feedback is attached later by request id; the
sync client reads unshipped rows in id order (never the whole backlog) and marks them shipped
only after the collector acknowledged them. A corrupt database is moved aside and logging goes
on in a fresh one (with a new store id, so the collector keeps both stores' rows apart); every
dropped record is counted, and a row the collector will never take waits in a dead-letter table.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
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

from .._io import unique_ids
from ..errors import EdgekitError
from ..metrics import probabilities
from ..features import summarise
from .record import decode_array, encode_array

__all__ = ["LogStore", "SamplingPolicy", "decode_array", "encode_array"]

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
    shipped INTEGER NOT NULL DEFAULT 0,
    cached INTEGER NOT NULL DEFAULT 0
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
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    source_id INTEGER NOT NULL,
    request_id TEXT,
    reason TEXT NOT NULL,
    time REAL NOT NULL,
    body TEXT NOT NULL,
    size INTEGER NOT NULL
);
"""

_INSERT = ("INSERT INTO records (request_id, time, model, version, variant, latency_ms, fallbacks, outputs, "
           "inputs, summary, hold_until, cached, size) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")
_SIZED = ("records", "feedback", "dead_letter")
MAX_BUFFER = 50_000  # rows kept in memory while the disk refuses writes; beyond that they are counted lost


@dataclass(frozen=True)
class SamplingPolicy:
    """Which predictions keep their inputs: all, a fraction, low-confidence ones, those that
    get feedback (held for ``feedback_window_s``), or none (summaries only)."""

    mode: Literal["all", "fraction", "low_confidence", "feedback", "none"] = "all"
    fraction: float = 0.1
    confidence_below: float = 0.6
    feedback_window_s: float = 3600.0

    def __post_init__(self):
        if not 0.0 <= self.fraction <= 1.0:
            raise EdgekitError(f"sampling fraction {self.fraction} is outside [0, 1]", "e.g. fraction:0.05 keeps 5%")
        if not 0.0 < self.confidence_below <= 1.0:
            raise EdgekitError(f"low_confidence threshold {self.confidence_below} is outside (0, 1]",
                               "e.g. low_confidence:0.5")
        if not self.feedback_window_s > 0:
            raise EdgekitError(f"the feedback window must be positive, got {self.feedback_window_s}")

    @classmethod
    def parse(cls, text: str) -> "SamplingPolicy":
        """'all', 'none', 'feedback', 'fraction:0.05' or 'low_confidence:0.5'."""
        name, _, arg = str(text).partition(":")
        try:
            if name == "fraction":
                return cls("fraction", fraction=float(arg))
            if name == "low_confidence":
                return cls("low_confidence", confidence_below=float(arg))
            if name in ("all", "none", "feedback") and not arg:
                return cls(name)
        except ValueError:
            pass
        raise EdgekitError(f"bad sampling policy {text!r}",
                           "use all, none, feedback, fraction:0.05 or low_confidence:0.5")


def _confidence(outputs: dict) -> Optional[float]:
    """The worst row's top-1 probability (logits or probabilities, read as monitoring reads them)."""
    first = next(iter(outputs.values()), None)
    if first is None or first.ndim != 2:
        return None
    return float(probabilities(first).max(axis=1).min())


def _summarise(inputs: dict) -> str:
    """The monitoring features of inputs that may not ship (edgekit.features); NaN becomes null."""
    return json.dumps(summarise(inputs), allow_nan=False)


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """Only a damaged file may be moved aside; a locked or unwritable one is the caller's problem."""
    name = getattr(exc, "sqlite_errorname", "")
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or str(exc).startswith("quick_check"):
        return True
    text = str(exc).lower()
    return not name and ("malformed" in text or "not a database" in text)


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
            except Exception as exc:  # kept buffered and retried; counted in stats()
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
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 4096:
            raise EdgekitError(f"log store max_bytes must be an integer of at least 4096, got {max_bytes!r}",
                               "e.g. 536870912 for 512 MiB")
        self.path = Path(path)
        if self.path.is_dir():
            raise EdgekitError(f"log store {self.path} is a directory", "give a file path, e.g. /var/lib/edgekit/log.db")
        self.max_bytes, self.when_full = max_bytes, when_full
        self.sampling = SamplingPolicy.parse(sampling) if isinstance(sampling, str) else sampling
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self.flush_ms = flush_ms
        self._buffer: list[tuple] = []
        self._buffered_ids: set[str] = set()
        self._buffered_since = 0.0
        self._closed = False
        self.flush_errors = 0
        self.last_error: Optional[str] = None
        self.lost = 0  # rows dropped from memory because the disk kept refusing them
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = self._open()
        self.store_id = self._store_id()
        self._new_id = unique_ids()  # request ids of the records this store writes
        # Bytes in use are derived from the rows at start-up and kept in memory after that.
        self._used = sum(self.db.execute(f"SELECT COALESCE(SUM(size), 0) FROM {t}").fetchone()[0] for t in _SIZED)
        if flush_ms > 0:
            threading.Thread(target=_flusher, args=(weakref.ref(self), flush_ms / 1000),
                             name="edgekit-logstore-flush", daemon=True).start()

    # -- opening, with recovery from corruption -------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
        try:
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process crash; only power loss can undo the
            # last transactions. FULL would fsync every prediction.
            db.execute("PRAGMA synchronous=NORMAL")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            db.executescript(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(records)")}
            if "cached" not in columns:  # a store written by an earlier edgekit
                db.execute("ALTER TABLE records ADD COLUMN cached INTEGER NOT NULL DEFAULT 0")
        except BaseException:
            db.close()
            raise
        return db

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise EdgekitError(f"log store {self.path} cannot be opened: {exc}",
                                   "another process may hold it locked, or the path is not writable; "
                                   "nothing was moved or deleted") from None
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("log store %s is corrupt (%s); moved aside to %s, starting a fresh one", self.path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    os.replace(src, f"{aside}{suffix}")
            self.recovered_from = str(aside)
            return self._connect()

    def _store_id(self) -> str:
        """This store's identity: row ids restart in a new store, so the collector keys on both."""
        self.db.execute("INSERT OR IGNORE INTO info (key, value) VALUES ('store_id', ?)", (uuid.uuid4().hex,))
        return self.db.execute("SELECT value FROM info WHERE key = 'store_id'").fetchone()[0]

    @contextlib.contextmanager
    def _tx(self):
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error: the connection never stays
        inside a failed transaction (which would make every later write fail)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

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
               latency_ms: float = 0.0, fallbacks: Optional[list] = None, request_id: Optional[str] = None,
               cached: bool = False) -> Optional[str]:
        """Log one prediction; returns its request id, or None when refused (store full).

        A caller-supplied ``request_id`` that was already logged is an error here, at once,
        rather than a failed group commit later that would take other records with it."""
        if request_id is not None and (not isinstance(request_id, str) or not 0 < len(request_id) <= 128):
            raise EdgekitError(f"request_id must be a string of 1-128 characters, got {request_id!r}")
        keep, hold = self._keep_inputs(outputs)
        summary = _summarise(inputs) if (not keep or hold) else None  # inputs that may not ship leave statistics
        latency = float(latency_ms) if latency_ms is not None and math.isfinite(latency_ms) else None
        row = (request_id or self._new_id(), time.time(), model, version, variant, latency,
               json.dumps(fallbacks or []), json.dumps({k: encode_array(v) for k, v in outputs.items()}),
               json.dumps({k: encode_array(v) for k, v in inputs.items()}) if keep else None,
               summary, hold, int(bool(cached)))
        size = sum(len(x) for x in row if isinstance(x, str)) + 64
        with self._lock:
            if self._closed:
                raise EdgekitError(f"log store {self.path} is closed")
            if request_id is not None and (request_id in self._buffered_ids or self.db.execute(
                    "SELECT 1 FROM records WHERE request_id = ?", (request_id,)).fetchone()):
                raise EdgekitError(f"request_id {request_id!r} was already logged", "request ids must be unique")
            if self._used + size <= self.max_bytes:
                self._used += size
                if self.flush_ms <= 0:
                    try:
                        self.db.execute(_INSERT, row + (size,))  # autocommit: one statement, one transaction
                    except sqlite3.Error:
                        self._used -= size
                        raise
                    return row[0]
                if not self._buffer:
                    self._buffered_since = time.monotonic()
                self._buffer.append(row + (size,))
                self._buffered_ids.add(row[0])
                if len(self._buffer) >= 512:
                    with contextlib.suppress(EdgekitError):  # stays buffered; counted in stats()
                        self._flush()
                return row[0]
            self._flush()
            with self._tx():  # full: making room and inserting commit together
                freed = self._make_room(size)
                if freed is None:
                    self._bump("dropped", 1)
                    return None
                self.db.execute(_INSERT, row + (size,))
            self._used += size - freed
        return row[0]

    def _flush(self) -> None:
        """Commit buffered appends in one transaction (caller holds the lock). On failure the
        rows stay buffered for the next try, and the error is counted and kept for stats()."""
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        try:
            with self._tx():
                self.db.executemany(_INSERT, rows)
        except sqlite3.Error as exc:
            self.flush_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._buffer = rows + self._buffer
            overflow = len(self._buffer) - MAX_BUFFER
            if overflow > 0:
                for r in self._buffer[:overflow]:
                    self._buffered_ids.discard(r[0])
                    self._used -= r[-1]
                self._buffer = self._buffer[overflow:]
                self.lost += overflow
            log.error("log store %s: could not commit %d records (%s); kept in memory for the next flush",
                      self.path, len(rows), exc)
            raise EdgekitError(f"log store {self.path} could not commit {len(rows)} records: {exc}",
                               "they are kept in memory and retried; check the disk") from None
        self._buffered_ids.clear()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _make_room(self, size: int) -> Optional[int]:
        """Free room for ``size`` bytes inside the caller's transaction; returns the bytes freed,
        or None when the policy refuses. Shipped rows go first (they are safe at the collector);
        then, unless the policy is 'refuse', the oldest unshipped records, each one counted."""
        need = self._used + size - self.max_bytes
        freed = 0
        for table, where in (("records", "shipped = 1"), ("feedback", "shipped = 1"), ("records", "1 = 1")):
            if freed >= need or (where == "1 = 1" and self.when_full == "refuse"):
                break
            last, count = None, 0
            for rid, rsize in self.db.execute(f"SELECT id, size FROM {table} WHERE {where} ORDER BY id"):
                if freed >= need:
                    break
                freed, last, count = freed + rsize, rid, count + 1
            if last is not None:
                self.db.execute(f"DELETE FROM {table} WHERE {where} AND id <= ?", (last,))
                if where == "1 = 1":
                    self._bump("dropped", count)
        return freed if freed >= need else None

    def feedback(self, request_id: str, label=None, outcome=None) -> None:
        """Attach a label (a JSON scalar, or a list with one per row of a batch prediction)
        and/or an outcome (a short string) to a logged prediction."""
        if not isinstance(request_id, str) or not request_id:
            raise EdgekitError(f"feedback needs the request_id of a logged prediction, got {request_id!r}",
                               "a prediction refused by a full store (request_id None) cannot take feedback")
        if outcome is not None and (not isinstance(outcome, str) or len(outcome) > 200):
            raise EdgekitError(f"feedback outcome must be a string of at most 200 characters, got {outcome!r}",
                               "e.g. 'accepted' or 'corrected'; put structured data in label")
        if isinstance(label, (np.ndarray, np.generic)):
            label = label.tolist()
        try:
            label_text = None if label is None else json.dumps(label, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise EdgekitError(f"feedback label is not JSON-serialisable: {exc}",
                               "use a number, a string, or a list of them (one per row of a batch)") from None
        size = sum(len(x) for x in (label_text, outcome) if x) + 32
        with self._lock:
            with contextlib.suppress(EdgekitError):  # buffered records stay buffered; feedback still lands
                self._flush()
            if label is not None:
                self._check_label_rows(request_id, label)
            with self._tx():
                self.db.execute("INSERT INTO feedback (request_id, time, label, outcome, size) VALUES (?,?,?,?,?)",
                                (request_id, time.time(), label_text, outcome, size))
                # a record held for feedback keeps its inputs and is released for shipping now
                self.db.execute("UPDATE records SET hold_until = 0 WHERE request_id = ?", (request_id,))
            self._used += size

    def _check_label_rows(self, request_id: str, label) -> None:
        """A batch prediction takes one label per row (a list), a single one a single label: one
        label on a batch of 4 was stored, and dropped later by every export that had to place it."""
        found = self.db.execute("SELECT outputs FROM records WHERE request_id = ?", (request_id,)).fetchone()
        if found is None:
            return  # shipped and pruned, or logged elsewhere: nothing here to hold it to
        shape = next(iter(json.loads(found[0]).values()), {}).get("shape") or [1]
        rows = int(shape[0])  # the first axis, as the collector counts a record's rows
        if rows > 1 and not (isinstance(label, list) and len(label) == rows):
            raise EdgekitError(f"prediction {request_id} holds {rows} rows; its label must be a list of {rows}, "
                               f"one per row, got {str(label)[:60]}", "use None for rows without a label")
        if rows == 1 and isinstance(label, list) and len(label) != 1:
            raise EdgekitError(f"prediction {request_id} holds one row; give one label, got a list of {len(label)}")

    # -- reading for the sync client ----------------------------------------------------------
    def next_batch(self, limit: int) -> tuple[list[dict], list[dict]]:
        """Up to ``limit`` unshipped records (held ones excepted) and pending feedback, in id order."""
        now = time.time()
        with self._lock:
            with contextlib.suppress(EdgekitError):
                self._flush()
            # records whose feedback window passed without feedback lose their inputs first
            if self.sampling.mode == "feedback":
                self.db.execute("UPDATE records SET inputs = NULL, hold_until = 0 WHERE shipped = 0 AND "
                                "hold_until > 0 AND hold_until <= ?", (now,))
            rows = self.db.execute(
                "SELECT id, request_id, time, model, version, variant, latency_ms, fallbacks, outputs, inputs, summary, "
                "cached FROM records WHERE shipped = 0 AND hold_until <= ? ORDER BY id LIMIT ?", (now, limit)).fetchall()
            fb = self.db.execute("SELECT id, request_id, time, label, outcome FROM feedback WHERE shipped = 0 "
                                 "ORDER BY id LIMIT ?", (limit,)).fetchall()
        records = [{"id": r[0], "request_id": r[1], "time": r[2], "model": r[3], "version": r[4], "variant": r[5],
                    "latency_ms": r[6], "fallbacks": json.loads(r[7]), "outputs": json.loads(r[8]),
                    "inputs": json.loads(r[9]) if r[9] else None, "summary": json.loads(r[10]) if r[10] else None,
                    "cached": bool(r[11])} for r in rows]
        feedback = [{"id": f[0], "request_id": f[1], "time": f[2], "label": json.loads(f[3]) if f[3] else None,
                     "outcome": f[4]} for f in fb]
        return records, feedback

    def mark_shipped(self, record_ids: list[int], feedback_ids: list[int]) -> None:
        with self._lock, self._tx():
            for table, ids in (("records", record_ids), ("feedback", feedback_ids)):
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    self.db.execute(f"UPDATE {table} SET shipped = 1 WHERE id IN ({','.join('?' * len(chunk))})", chunk)

    def dead_letter(self, kind: str, row: dict, reason: str) -> None:
        """Move one record or feedback row that the collector will never take (too large,
        refused as malformed) out of the queue, so that everything behind it ships. It is kept,
        counted and shown by ``sync status``; never silently deleted."""
        table = {"record": "records", "feedback": "feedback"}[kind]
        with self._lock, self._tx():
            size = self.db.execute(f"SELECT size FROM {table} WHERE id = ?", (row["id"],)).fetchone()
            if size is None:
                return
            self.db.execute("INSERT INTO dead_letter (kind, source_id, request_id, reason, time, body, size) "
                            "VALUES (?,?,?,?,?,?,?)", (kind, row["id"], row.get("request_id"), reason[:500],
                                                       time.time(), json.dumps(row, sort_keys=True), size[0]))
            self.db.execute(f"DELETE FROM {table} WHERE id = ?", (row["id"],))
        log.error("log store %s: %s %s moved to the dead-letter table: %s", self.path, kind, row.get("request_id"), reason)

    def prune_shipped(self, keep_seconds: float = 0.0) -> int:
        """Delete shipped rows older than ``keep_seconds``; returns how many records."""
        cutoff = time.time() - keep_seconds
        with self._lock:
            with contextlib.suppress(EdgekitError):
                self._flush()
            with self._tx():
                freed = self.db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM records WHERE shipped = 1 "
                                        "AND time <= ?", (cutoff,)).fetchone()
                self.db.execute("DELETE FROM records WHERE shipped = 1 AND time <= ?", (cutoff,))
                fb = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM feedback WHERE shipped = 1 AND time <= ?",
                                     (cutoff,)).fetchone()[0]
                self.db.execute("DELETE FROM feedback WHERE shipped = 1 AND time <= ?", (cutoff,))
            self._used -= freed[0] + fb
        return freed[1]

    def health(self) -> dict:
        """What the collector's fleet monitoring wants to know about this store (wire format)."""
        with self._lock:
            pending = self.db.execute("SELECT COUNT(*), MIN(time) FROM records WHERE shipped = 0").fetchone()
            dead = self.db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
            buffered = len(self._buffer)
        return {"dropped": self.dropped, "pending": pending[0] + buffered, "oldest_pending": pending[1],
                "dead_letter": dead}

    def stats(self) -> dict:
        with self._lock:
            with contextlib.suppress(EdgekitError):  # a failing disk shows in the numbers below
                self._flush()
            pending = self.db.execute("SELECT COUNT(*), MIN(time) FROM records WHERE shipped = 0").fetchone()
            shipped = self.db.execute("SELECT COUNT(*) FROM records WHERE shipped = 1").fetchone()[0]
            fb = self.db.execute("SELECT COUNT(*) FROM feedback WHERE shipped = 0").fetchone()[0]
            dead = self.db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
            buffered = len(self._buffer)
        return {"store_id": self.store_id, "pending": pending[0] + buffered, "oldest_pending": pending[1],
                "shipped": shipped, "pending_feedback": fb, "dead_letter": dead, "dropped": self.dropped,
                "unflushed": buffered, "flush_errors": self.flush_errors, "last_error": self.last_error,
                "lost": self.lost, "used_bytes": self.used_bytes, "max_bytes": self.max_bytes,
                "recovered_from": getattr(self, "recovered_from", None)}

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._flush()
            finally:
                self._closed = True
                self.db.close()
