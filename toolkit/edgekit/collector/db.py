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

SCHEMA_VERSION = 2

# Version 2: record and feedback identity is (device, store, id): a reinstalled device's new log
# store restarts its ids at 1. Idempotency keys are scoped per device.
TABLES = {
    "devices": """CREATE TABLE IF NOT EXISTS devices (name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,
       revoked INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, last_seen REAL)""",
    "batches": """CREATE TABLE IF NOT EXISTS batches (device TEXT NOT NULL, idempotency_key TEXT NOT NULL,
       payload_hash TEXT NOT NULL, result TEXT NOT NULL, received REAL NOT NULL,
       PRIMARY KEY (device, idempotency_key))""",
    "records": """CREATE TABLE IF NOT EXISTS records (device TEXT NOT NULL, store TEXT NOT NULL DEFAULT '',
       record_id BIGINT NOT NULL, request_id TEXT NOT NULL, time REAL NOT NULL, model TEXT NOT NULL, version TEXT,
       variant TEXT, latency_ms REAL, fallbacks TEXT, outputs TEXT, inputs TEXT, summary TEXT,
       cached INTEGER NOT NULL DEFAULT 0, received REAL NOT NULL, PRIMARY KEY (device, store, record_id))""",
    "feedback": """CREATE TABLE IF NOT EXISTS feedback (device TEXT NOT NULL, store TEXT NOT NULL DEFAULT '',
       feedback_id BIGINT NOT NULL, request_id TEXT NOT NULL, time REAL NOT NULL, label TEXT, outcome TEXT,
       received REAL NOT NULL, PRIMARY KEY (device, store, feedback_id))""",
}
INDEXES = [
    "CREATE INDEX IF NOT EXISTS records_time ON records (model, time)",
    "CREATE INDEX IF NOT EXISTS records_request ON records (device, request_id)",
    "CREATE INDEX IF NOT EXISTS feedback_request ON feedback (device, request_id)",
]
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

    def __init__(self, url: str):
        super().__init__(url)
        try:
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise EdgekitError(f"--db {url} is not a usable SQLite database: {exc}",
                               "point --db at the collector's database file, or a new path") from None

    def _migrate(self) -> None:
        with self.connect() as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS collector_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = tx.one("SELECT value FROM collector_meta WHERE key = 'schema_version'")
            existing = tx.table_exists("records")
            version = int(row[0]) if row else (1 if existing else SCHEMA_VERSION)
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
            for statement in list(TABLES.values()) + INDEXES:
                tx.execute(statement)
            if version == 1:
                for table, copy in MIGRATE_1.items():
                    tx.execute(copy)
                    tx.execute(f"DROP TABLE {table}_v1")
            if row is None or version != SCHEMA_VERSION:
                tx.execute("DELETE FROM collector_meta WHERE key = 'schema_version'")
                tx.execute("INSERT INTO collector_meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

def add_device(db: Database, name: str) -> str:
    """Register ``name`` (or give a revoked one a new token); returns the token, which is shown
    once: only its hash is stored."""
    if not name or len(name) > 200 or not name.isprintable():
        raise EdgekitError(f"bad device name {name!r}", "use 1-200 printable characters, e.g. pi-kitchen")
    token = secrets.token_urlsafe(32)
    with db.connect() as tx:
        row = tx.one("SELECT revoked FROM devices WHERE name = ?", (name,))
        if row and not row[0]:
            raise EdgekitError(f"device {name!r} already exists", "revoke it first or pick another name")
        if row:  # re-enrolling a revoked device: its history stays, its old token stays dead
            tx.execute("UPDATE devices SET token_hash = ?, revoked = 0 WHERE name = ?", (hash_token(token), name))
        else:
            tx.execute("INSERT INTO devices (name, token_hash, created) VALUES (?, ?, ?)",
                       (name, hash_token(token), time.time()))
    return token


def revoke_device(db: Database, name: str) -> None:
    with db.connect() as tx:
        if not tx.one("SELECT name FROM devices WHERE name = ?", (name,)):
            raise EdgekitError(f"no device named {name!r}", "see: edgekit collector stats")
        tx.execute("UPDATE devices SET revoked = 1 WHERE name = ?", (name,))


def device_for(db: Database, token: str) -> Optional[str]:
    with db.connect() as tx:
        row = tx.one("SELECT name FROM devices WHERE token_hash = ? AND revoked = 0", (hash_token(token),))
    return row[0] if row else None
