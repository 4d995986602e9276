"""Collector storage: SQLite by default, PostgreSQL for fleets, behind one small interface.

SQL is written once with '?' placeholders and ``ON CONFLICT DO NOTHING`` (both databases speak
it); the PostgreSQL connection swaps the placeholders.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Optional

from ..errors import EdgekitError

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS devices (name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,
       revoked INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, last_seen REAL)""",
    """CREATE TABLE IF NOT EXISTS batches (idempotency_key TEXT PRIMARY KEY, device TEXT NOT NULL,
       payload_hash TEXT NOT NULL, result TEXT NOT NULL, received REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS records (device TEXT NOT NULL, record_id BIGINT NOT NULL,
       request_id TEXT NOT NULL, time REAL NOT NULL, model TEXT NOT NULL, version TEXT, variant TEXT,
       latency_ms REAL, fallbacks TEXT, outputs TEXT, inputs TEXT, summary TEXT, received REAL NOT NULL,
       PRIMARY KEY (device, record_id))""",
    "CREATE INDEX IF NOT EXISTS records_time ON records (model, time)",
    "CREATE INDEX IF NOT EXISTS records_request ON records (device, request_id)",
    """CREATE TABLE IF NOT EXISTS feedback (device TEXT NOT NULL, feedback_id BIGINT NOT NULL,
       request_id TEXT NOT NULL, time REAL NOT NULL, label TEXT, outcome TEXT, received REAL NOT NULL,
       PRIMARY KEY (device, feedback_id))""",
]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Database:
    """A connection per thread; ``transaction()`` for the ingest."""

    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite:///"):
            self.kind = "sqlite"
            self.path = Path(url[len("sqlite:///"):])
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif url.startswith(("postgresql://", "postgres://")):
            self.kind = "postgresql"
            try:
                import psycopg  # noqa: F401
            except ImportError:
                raise EdgekitError("PostgreSQL needs psycopg", "pip install 'edgekit[collector]'") from None
        else:
            raise EdgekitError(f"unsupported database URL {url!r}", "use sqlite:///path.db or postgresql://user@host/db")
        self._local = threading.local()
        with self.connect() as conn:
            for statement in SCHEMA:
                conn.execute(statement)

    def _raw(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.kind == "sqlite":
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")  # acknowledged means on disk
            else:
                import psycopg

                try:
                    conn = psycopg.connect(self.url, autocommit=True)
                except psycopg.OperationalError as exc:
                    raise EdgekitError(f"cannot connect to {self.url}: {str(exc).strip().splitlines()[0]}") from None
            self._local.conn = conn
        return conn

    def connect(self) -> "Tx":
        return Tx(self)


class Tx:
    """One transaction: commit on success, roll back on any error."""

    def __init__(self, db: Database):
        self.db, self.conn = db, db._raw()

    def __enter__(self):
        self.conn.execute("BEGIN" if self.db.kind == "postgresql" else "BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return False

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.db.kind == "postgresql" else sql

    def execute(self, sql: str, params=()):
        return self.conn.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows) -> int:
        """Insert rows, returning how many were new (conflicts are skipped, not counted)."""
        sql = self._sql(sql)
        if self.db.kind == "postgresql":
            with self.conn.cursor() as cur:
                cur.executemany(sql, rows)
                return cur.rowcount if cur.rowcount >= 0 else 0
        before = self.conn.total_changes
        self.conn.executemany(sql, rows)
        return self.conn.total_changes - before

    def one(self, sql: str, params=()):
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params=()):
        return self.execute(sql, params).fetchall()


def add_device(db: Database, name: str) -> str:
    """Register ``name``; returns its token (shown once, only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    with db.connect() as tx:
        if tx.one("SELECT name FROM devices WHERE name = ?", (name,)):
            raise EdgekitError(f"device {name!r} already exists", "revoke it first or pick another name")
        tx.execute("INSERT INTO devices (name, token_hash, created) VALUES (?, ?, ?)", (name, hash_token(token), time.time()))
    return token


def revoke_device(db: Database, name: str) -> None:
    with db.connect() as tx:
        if not tx.one("SELECT name FROM devices WHERE name = ?", (name,)):
            raise EdgekitError(f"no device named {name!r}")
        tx.execute("UPDATE devices SET revoked = 1 WHERE name = ?", (name,))


def device_for(db: Database, token: str) -> Optional[str]:
    with db.connect() as tx:
        row = tx.one("SELECT name FROM devices WHERE token_hash = ? AND revoked = 0", (hash_token(token),))
    return row[0] if row else None
