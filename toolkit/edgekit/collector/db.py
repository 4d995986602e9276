"""Collector storage: SQLite by default, PostgreSQL for fleets, behind one small interface.

SQL is written once with '?' placeholders and ``ON CONFLICT DO NOTHING`` (both databases speak
it); the PostgreSQL connection swaps the placeholders. The schema carries its version in
``collector_meta`` and is migrated in place, in one transaction, when an older collector's
database is opened.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from typing import Optional

from .._sql import SqlDatabase, Tx  # noqa: F401  (Tx: imported from here too)
from ..errors import EdgekitError
from ..names import LABEL_STORE  # noqa: F401  (imported from here too)

SCHEMA_VERSION = 7

# Version 2: record and feedback identity is (device, store, id): a reinstalled device's new log
# store restarts its ids at 1. Idempotency keys are scoped per device.
# Version 3 (monitoring): each record carries signals derived on arrival (rows, top class,
# confidence, margin, entropy, output norm, non-finite outputs, an output hash); sketches hold
# feature histograms per model, version, device and hour; devices have a group and report their
# log store's health; references and alert state for `edgekit monitor`.
# Version 4: records carry their inputs' hash (identical outputs count for different inputs only).
# Version 5: collector_ticks, one row per timed task (the canary decision) and interval, claimed by
# the replica that ran it.
# Version 6: model_devices, the devices that ever logged each model (monitoring's device list read
# every sketch of a model's history to find them: the part of a day's report that grew with it).
# Version 7: hourly rollups of the record aggregates (edgekit.monitor.rollups): record_hours,
# record_hour_counts, and the hours ingest touched since they were rolled up (rollup_dirty).
# Times and measurements are DOUBLE PRECISION: PostgreSQL's REAL is 4 bytes, which rounds an epoch
# time to 128 seconds and puts a just-received record outside "the last hour" (SQLite's REAL is
# already 8 bytes; it reads DOUBLE PRECISION as REAL).
TABLES = {
    "devices": """CREATE TABLE IF NOT EXISTS devices (name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,
       revoked INTEGER NOT NULL DEFAULT 0, created DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION,
       grp TEXT NOT NULL DEFAULT '', dropped BIGINT, pending BIGINT, oldest_pending DOUBLE PRECISION,
       dead_letter BIGINT, health_time DOUBLE PRECISION)""",
    "batches": """CREATE TABLE IF NOT EXISTS batches (device TEXT NOT NULL, idempotency_key TEXT NOT NULL,
       payload_hash TEXT NOT NULL, result TEXT NOT NULL, received DOUBLE PRECISION NOT NULL,
       PRIMARY KEY (device, idempotency_key))""",
    "records": """CREATE TABLE IF NOT EXISTS records (device TEXT NOT NULL, store TEXT NOT NULL DEFAULT '',
       record_id BIGINT NOT NULL, request_id TEXT NOT NULL, time DOUBLE PRECISION NOT NULL, model TEXT NOT NULL,
       version TEXT, variant TEXT, latency_ms DOUBLE PRECISION, fallbacks TEXT, outputs TEXT, inputs TEXT,
       summary TEXT, cached INTEGER NOT NULL DEFAULT 0, received DOUBLE PRECISION NOT NULL, rows INTEGER,
       top_class INTEGER, confidence DOUBLE PRECISION, margin DOUBLE PRECISION, entropy DOUBLE PRECISION,
       out_norm DOUBLE PRECISION, nonfinite INTEGER, out_hash TEXT, has_fallback INTEGER, in_hash TEXT,
       PRIMARY KEY (device, store, record_id))""",
    "feedback": """CREATE TABLE IF NOT EXISTS feedback (device TEXT NOT NULL, store TEXT NOT NULL DEFAULT '',
       feedback_id BIGINT NOT NULL, request_id TEXT NOT NULL, time DOUBLE PRECISION NOT NULL, label TEXT,
       outcome TEXT, received DOUBLE PRECISION NOT NULL, PRIMARY KEY (device, store, feedback_id))""",
    "sketches": """CREATE TABLE IF NOT EXISTS sketches (model TEXT NOT NULL, version TEXT NOT NULL, device TEXT NOT NULL,
       hour BIGINT NOT NULL, feature TEXT NOT NULL, bucket INTEGER NOT NULL, n BIGINT NOT NULL,
       PRIMARY KEY (model, hour, version, device, feature, bucket))""",
    "model_devices": """CREATE TABLE IF NOT EXISTS model_devices (model TEXT NOT NULL, device TEXT NOT NULL,
       PRIMARY KEY (model, device))""",
    # Hourly rollups (edgekit.monitor.rollups): what monitoring sums per model, version, device and
    # hour, and the threshold the low-confidence count was counted at.
    "record_hours": """CREATE TABLE IF NOT EXISTS record_hours (model TEXT NOT NULL, version TEXT NOT NULL,
       device TEXT NOT NULL, hour BIGINT NOT NULL, records BIGINT NOT NULL, rows BIGINT, low_confidence BIGINT,
       with_confidence BIGINT, entropy_sum DOUBLE PRECISION, with_entropy BIGINT, nonfinite BIGINT, fallbacks BIGINT,
       cached BIGINT, distinct_outputs BIGINT, distinct_inputs BIGINT, unhashed_inputs BIGINT, hashed_inputs BIGINT,
       lag_sum DOUBLE PRECISION, lag_max DOUBLE PRECISION, last_time DOUBLE PRECISION, low_at DOUBLE PRECISION NOT NULL,
       PRIMARY KEY (model, hour, version, device))""",
    "record_hour_counts": """CREATE TABLE IF NOT EXISTS record_hour_counts (model TEXT NOT NULL, version TEXT NOT NULL,
       device TEXT NOT NULL, hour BIGINT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL, n BIGINT NOT NULL,
       PRIMARY KEY (model, hour, version, device, kind, value))""",
    "rollup_dirty": """CREATE TABLE IF NOT EXISTS rollup_dirty (model TEXT NOT NULL, hour BIGINT NOT NULL,
       device TEXT NOT NULL, stamp BIGINT NOT NULL, PRIMARY KEY (model, hour, device))""",
    "monitor_reference": """CREATE TABLE IF NOT EXISTS monitor_reference (model TEXT PRIMARY KEY,
       created DOUBLE PRECISION NOT NULL, body TEXT NOT NULL)""",
    "monitor_alerts": """CREATE TABLE IF NOT EXISTS monitor_alerts (rule TEXT NOT NULL, scope TEXT NOT NULL,
       fired DOUBLE PRECISION NOT NULL, PRIMARY KEY (rule, scope))""",
    # The retraining loop's persisted state (edgekit.loop.state): runs and their finished steps,
    # every trigger decision, what was queued for labelling, and one loop per model at a time.
    "loop_runs": """CREATE TABLE IF NOT EXISTS loop_runs (run_id TEXT PRIMARY KEY, model TEXT NOT NULL,
       started DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL, step TEXT NOT NULL, status TEXT NOT NULL,
       trigger_name TEXT NOT NULL, reason TEXT NOT NULL, directory TEXT NOT NULL, outputs TEXT NOT NULL)""",
    "loop_decisions": """CREATE TABLE IF NOT EXISTS loop_decisions (model TEXT NOT NULL, time DOUBLE PRECISION NOT NULL,
       retrain INTEGER NOT NULL, trigger_name TEXT NOT NULL, reason TEXT NOT NULL, numbers TEXT NOT NULL,
       run_id TEXT, PRIMARY KEY (model, time))""",
    "loop_queue": """CREATE TABLE IF NOT EXISTS loop_queue (model TEXT NOT NULL, device TEXT NOT NULL,
       request_id TEXT NOT NULL, row_index INTEGER NOT NULL, run_id TEXT NOT NULL, queued DOUBLE PRECISION NOT NULL,
       PRIMARY KEY (model, device, request_id, row_index))""",
    "loop_lock": """CREATE TABLE IF NOT EXISTS loop_lock (model TEXT PRIMARY KEY, owner TEXT NOT NULL,
       expires DOUBLE PRECISION NOT NULL)""",
    # Fleet updates (edgekit.collector.releases): published bundles, one rollout per model, what
    # each device runs, and every rollout event with its reason.
    "releases": """CREATE TABLE IF NOT EXISTS releases (model TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL,
       size BIGINT NOT NULL, created DOUBLE PRECISION NOT NULL, signed INTEGER NOT NULL, PRIMARY KEY (model, version))""",
    "rollouts": """CREATE TABLE IF NOT EXISTS rollouts (model TEXT PRIMARY KEY, version TEXT NOT NULL, baseline TEXT,
       canary DOUBLE PRECISION NOT NULL, groups TEXT NOT NULL, shadow INTEGER NOT NULL, state TEXT NOT NULL,
       started DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL)""",
    "device_models": """CREATE TABLE IF NOT EXISTS device_models (device TEXT NOT NULL, model TEXT NOT NULL,
       version TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL, time DOUBLE PRECISION NOT NULL,
       PRIMARY KEY (device, model))""",
    # What the collectors did on their timers: one row per task and interval, by whichever replica
    # claimed it (the primary key makes that one), with what it decided.
    "collector_ticks": """CREATE TABLE IF NOT EXISTS collector_ticks (task TEXT NOT NULL, slot BIGINT NOT NULL,
       replica TEXT NOT NULL, time DOUBLE PRECISION NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (task, slot))""",
    "rollout_events": """CREATE TABLE IF NOT EXISTS rollout_events (model TEXT NOT NULL, time DOUBLE PRECISION NOT NULL,
       version TEXT NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL)""",
}
# A new PostgreSQL database partitions records by day (collector.partitions): the primary key
# holds the partition key, time, which a record keeps when it is sent again.
PARTITIONED_RECORDS = (TABLES["records"].replace("PRIMARY KEY (device, store, record_id))",
                                                 "PRIMARY KEY (device, store, record_id, time)) PARTITION BY RANGE (time)"))
INDEXES = [
    # Monitoring reads a model's records over a time window, aggregating these columns: with them
    # in the index, a scan never touches the wide rows (outputs, inputs, summaries).
    "CREATE INDEX IF NOT EXISTS records_monitor ON records (model, time, version, device, confidence, entropy, "
    "nonfinite, has_fallback, cached, out_hash, received, variant, top_class, rows, in_hash)",
    # The records that kept raw inputs: a few percent of a fleet's log, found without a scan.
    "CREATE INDEX IF NOT EXISTS records_inputs ON records (model, time) WHERE inputs IS NOT NULL",
    # Feedback finds its prediction here, with what monitoring compares it to (no row lookup).
    "CREATE INDEX IF NOT EXISTS records_request ON records (device, request_id, model, time, version, top_class)",
    "CREATE INDEX IF NOT EXISTS feedback_request ON feedback (device, request_id)",
    "CREATE INDEX IF NOT EXISTS feedback_time ON feedback (time)",
    # The incremental exports (the lake, export --incremental) read what arrived since their last
    # run: an index range, not a scan of the whole history each hour.
    "CREATE INDEX IF NOT EXISTS records_received ON records (received)",
    "CREATE INDEX IF NOT EXISTS feedback_received ON feedback (received)",
]
# Version 2 -> 3: new columns (records' are filled by the backfill), new tables from TABLES.
DEVICE_COLUMNS_3 = ("grp TEXT NOT NULL DEFAULT ''", "dropped BIGINT", "pending BIGINT",
                    "oldest_pending DOUBLE PRECISION", "dead_letter BIGINT", "health_time DOUBLE PRECISION")
RECORD_COLUMNS_3 = ("rows INTEGER", "top_class INTEGER", "confidence DOUBLE PRECISION", "margin DOUBLE PRECISION",
                    "entropy DOUBLE PRECISION", "out_norm DOUBLE PRECISION", "nonfinite INTEGER", "out_hash TEXT",
                    "has_fallback INTEGER")
RECORD_COLUMNS_4 = ("in_hash TEXT",)
# Version 1 -> 2: copy each changed table into its new shape (old rows belong to store '').
MIGRATE_1 = {
    "batches": "INSERT INTO batches (device, idempotency_key, payload_hash, result, received) "
               "SELECT device, idempotency_key, payload_hash, result, received FROM batches_v1",
    "records": "INSERT INTO records (device, store, record_id, request_id, time, model, version, variant, latency_ms, "
               "fallbacks, outputs, inputs, summary, received) SELECT device, '', record_id, request_id, time, model, "
               "version, variant, latency_ms, fallbacks, outputs, inputs, summary, received FROM records_v1",
    "feedback": "INSERT INTO feedback (device, store, feedback_id, request_id, time, label, outcome, received) "
                "SELECT device, '', feedback_id, request_id, time, label, outcome, received FROM feedback_v1",
}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Database(SqlDatabase):
    """The collector's database: the schema is created or migrated on open."""

    def __init__(self, url: str, existing: bool = False):
        super().__init__(url, existing=existing)
        try:
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise EdgekitError(f"--db {url} is not a usable SQLite database: {exc}",
                               "point --db at the collector's database file, or a new path") from None

    def _migrate(self) -> None:
        with self.connect() as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS collector_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            stored = tx.meta("schema_version")
            existing = tx.table_exists("records")
            version = int(stored) if stored else (1 if existing else SCHEMA_VERSION)
            if version > SCHEMA_VERSION:
                raise EdgekitError(f"the collector database uses schema {version}, newer than this edgekit ({SCHEMA_VERSION})",
                                   "upgrade edgekit")
            if version == 1:
                for table in MIGRATE_1:
                    tx.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
                    if self.kind == "postgresql":  # the primary key's index keeps its name otherwise
                        tx.execute(f"ALTER INDEX IF EXISTS {table}_pkey RENAME TO {table}_v1_pkey")
                for index in ("records_time", "records_request"):
                    tx.execute(f"DROP INDEX IF EXISTS {index}")
            if version < 3:
                for column in DEVICE_COLUMNS_3:  # devices kept their table through version 2
                    tx.execute(f"ALTER TABLE devices ADD COLUMN {column}")
            if version == 2:
                for column in RECORD_COLUMNS_3:
                    tx.execute(f"ALTER TABLE records ADD COLUMN {column}")
            if version in (2, 3):
                for column in RECORD_COLUMNS_4:  # old rows keep NULL: each counts as a different input
                    tx.execute(f"ALTER TABLE records ADD COLUMN {column}")
                tx.execute("DROP INDEX IF EXISTS records_monitor")  # made again below, with the new column
                for index in ("records_time", "records_request"):  # records_monitor starts with the first one's
                    tx.execute(f"DROP INDEX IF EXISTS {index}")  # columns; the second one gains some
            fresh = stored is None and not existing
            if fresh and self.kind == "postgresql":  # a new fleet database: records partitioned by day
                tx.execute(PARTITIONED_RECORDS)
                tx.execute("CREATE TABLE IF NOT EXISTS records_other PARTITION OF records DEFAULT")
            for statement in list(TABLES.values()) + INDEXES:
                tx.execute(statement)
            if version == 1:
                for table, copy in MIGRATE_1.items():
                    tx.execute(copy)
                    tx.execute(f"DROP TABLE {table}_v1")
            if version < 3 and self.kind == "postgresql":
                _widen_reals(tx)
            if version < 3:
                backfill(tx)
            if version < 6:  # the devices each model's sketches name (none in a new database)
                tx.execute("INSERT INTO model_devices (model, device) SELECT DISTINCT model, device FROM sketches")
            if version < 7 and not fresh:  # the hours logged so far are read from records until rolled up
                from ..monitor.rollups import mark_all

                mark_all(tx)
            if stored is None or version != SCHEMA_VERSION:
                tx.set_meta("schema_version", str(SCHEMA_VERSION))
            self.partitioned = partitioned(tx)
        self.rollups = True  # monitoring reads whole clean hours from record_hours (edgekit.monitor.rollups)

def partitioned(tx) -> bool:
    """Whether records are partitioned by day (edgekit.collector.partitions)."""
    return tx.db.kind == "postgresql" and bool(tx.one(
        "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "WHERE c.relname = 'records' AND c.relnamespace = to_regnamespace(current_schema())"))


def _widen_reals(tx) -> None:
    """Versions 1 and 2 declared times REAL, 4 bytes on PostgreSQL: widen them (the precision
    already lost stays lost; new rows keep theirs)."""
    rows = tx.all("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
                  "current_schema() AND data_type = 'real' AND table_name IN ('devices', 'batches', 'records', "
                  "'feedback')")
    for table, column in rows:
        tx.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE DOUBLE PRECISION")


RECORD_SIGNALS_SQL = ("UPDATE records SET rows = ?, top_class = ?, confidence = ?, margin = ?, entropy = ?, out_norm = ?, "
                      "nonfinite = ?, out_hash = ?, in_hash = ?, has_fallback = ? WHERE device = ? AND store = ? "
                      "AND record_id = ?")
SKETCH_UPSERT = ("INSERT INTO sketches (model, version, device, hour, feature, bucket, n) VALUES (?,?,?,?,?,?,?) "
                 "ON CONFLICT (model, hour, version, device, feature, bucket) DO UPDATE SET n = sketches.n + excluded.n")


def has_fallback(fallbacks_json: str | None) -> int:
    return int(bool(fallbacks_json) and fallbacks_json not in ("[]", "null"))


def backfill(tx: Tx, chunk: int = 2000) -> int:
    """Derive the monitoring signals and sketches of records stored before version 3, in chunks
    (keyset pagination: the log is never read whole)."""
    import math

    from ..monitor.derive import derive, item_from_row, sketch_rows

    last, done = ("", "", -1), 0
    while True:
        rows = tx.all("SELECT device, store, record_id, model, version, time, latency_ms, outputs, inputs, summary, "
                      "fallbacks FROM records WHERE (device, store, record_id) > (?, ?, ?) "
                      "ORDER BY device, store, record_id LIMIT ?", (*last, chunk))
        if not rows:
            return done
        last = tuple(rows[-1][:3])
        by_device: dict[str, list] = {}
        for r in rows:
            if r[5] is not None and math.isfinite(r[5]):
                by_device.setdefault(r[0], []).append(r)
        for device, group in by_device.items():
            derived, counts = derive([item_from_row(*r[3:10]) for r in group])
            tx.executemany(RECORD_SIGNALS_SQL, [d.columns() + (has_fallback(r[10]), r[0], r[1], r[2])
                                                for d, r in zip(derived, group)])
            sketches = list(sketch_rows(device, counts))
            if sketches:
                tx.executemany(SKETCH_UPSERT, sketches)
        done += len(rows)


def _check_group(group: str) -> str:
    if len(group) > 200 or not group.isprintable():
        raise EdgekitError(f"bad device group {group!r}", "use up to 200 printable characters, e.g. store-12")
    return group


def add_device(db: Database, name: str, group: str = "") -> str:
    """Register ``name`` (or give a revoked one a new token); returns the token, which is shown
    once: only its hash is stored."""
    if not name or len(name) > 200 or not name.isprintable():
        raise EdgekitError(f"bad device name {name!r}", "use 1-200 printable characters, e.g. pi-kitchen")
    _check_group(group)
    token = secrets.token_urlsafe(32)
    with db.connect() as tx:
        row = tx.one("SELECT revoked FROM devices WHERE name = ?", (name,))
        if row and not row[0]:
            raise EdgekitError(f"device {name!r} already exists", "revoke it first or pick another name")
        if row:  # re-enrolling a revoked device: its history stays, its old token stays dead
            tx.execute("UPDATE devices SET token_hash = ?, revoked = 0, grp = ? WHERE name = ?",
                       (hash_token(token), group, name))
        else:
            tx.execute("INSERT INTO devices (name, token_hash, created, grp) VALUES (?, ?, ?, ?)",
                       (name, hash_token(token), time.time(), group))
    return token


def set_group(db: Database, name: str, group: str) -> None:
    _check_group(group)
    with db.connect() as tx:
        if not tx.one("SELECT name FROM devices WHERE name = ?", (name,)):
            raise EdgekitError(f"no device named {name!r}", "see: edgekit collector stats")
        tx.execute("UPDATE devices SET grp = ? WHERE name = ?", (group, name))


def revoke_device(db: Database, name: str) -> None:
    with db.connect() as tx:
        if not tx.one("SELECT name FROM devices WHERE name = ?", (name,)):
            raise EdgekitError(f"no device named {name!r}", "see: edgekit collector stats")
        tx.execute("UPDATE devices SET revoked = 1 WHERE name = ?", (name,))


def device_for(db: Database, token: str) -> Optional[str]:
    with db.read() as tx:  # a read: every request authenticates, and must not queue for the write lock
        row = tx.one("SELECT name FROM devices WHERE token_hash = ? AND revoked = 0", (hash_token(token),))
    return row[0] if row else None
