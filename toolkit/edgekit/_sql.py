"""SQL on SQLite or PostgreSQL behind one small interface: a connection per thread, one
transaction per ``connect()``, rows streamed in chunks.

SQL is written once with '?' placeholders and ``ON CONFLICT DO NOTHING`` (both databases speak
it); the PostgreSQL connection swaps the placeholders. Used by the collector and by batch
prediction into a database.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import threading
from pathlib import Path
from typing import Iterator, Optional

from .errors import EdgekitError, first_line


# INSERT INTO table (columns) VALUES (?, ..., ?) tail: what executemany COPYs on PostgreSQL
_INSERT = re.compile(r"\s*INSERT\s+INTO\s+(\w+)\s*\(([^)]*)\)\s*VALUES\s*\((?:\s*\?\s*,)*\s*\?\s*\)\s*(.*)$",
                     re.IGNORECASE | re.DOTALL)
_TARGET = re.compile(r"ON\s+CONFLICT\s*\(([^)]*)\)", re.IGNORECASE)
COPY_FROM = 20  # rows from which COPY pays for its extra statements


class SqlDatabase:
    """``sqlite:///path.db`` or ``postgresql://user@host/db``."""

    def __init__(self, url: str, flag: str = "--db", existing: bool = False):
        """``existing``: the database must be there already (a command that reads one must not
        create an empty one at a mistyped path and report on nothing)."""
        self.url = url
        if url.startswith("sqlite:///"):
            self.kind = "sqlite"
            self.path = Path(url[len("sqlite:///"):])
            if self.path.is_dir():
                raise EdgekitError(f"{flag} {url}: {self.path} is a directory", "name a file, e.g. sqlite:///logs.db")
            if existing and not self.path.is_file():
                raise EdgekitError(f"{flag} {url}: there is no database at {self.path}",
                                   "check the path; the collector creates its database when it first starts")
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

    def _raw(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.kind == "sqlite":
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                except sqlite3.DatabaseError as exc:
                    conn.close()
                    raise EdgekitError(f"{self.url}: {self.path} is not a SQLite database ({exc})",
                                       "point the URL at a database file, or a new path") from None
                conn.execute("PRAGMA synchronous=FULL")  # acknowledged means on disk
            else:
                import psycopg

                try:
                    conn = psycopg.connect(self.url, autocommit=True)
                except psycopg.OperationalError as exc:
                    raise EdgekitError(f"cannot connect to {self.url}: {first_line(exc)}") from None
            self._local.conn = conn
        return conn

    def connect(self) -> "Tx":
        return Tx(self)

    def close(self) -> None:
        """Close this thread's connection (the next transaction opens another)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    def read(self) -> "Tx":
        """A read-only transaction: on SQLite it takes no write lock, so a long report does not
        hold up the devices' uploads (WAL lets readers and the writer run side by side)."""
        return Tx(self, write=False)


class Tx:
    """One transaction: commit on success, roll back on any error."""

    def __init__(self, db: SqlDatabase, write: bool = True):
        self.db, self.conn, self.write = db, db._raw(), write

    def __enter__(self):
        if self.db.kind == "postgresql":
            # a read sees one snapshot throughout: a report's statements (which hours are rolled
            # up, the rollups, the records) agree with each other while devices keep uploading
            self.conn.execute("BEGIN" if self.write else "BEGIN ISOLATION LEVEL REPEATABLE READ")
        else:
            self.conn.execute("BEGIN IMMEDIATE" if self.write else "BEGIN")
        return self

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return False

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.db.kind == "postgresql" else sql

    def execute(self, sql: str, params=()):
        return self.conn.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows) -> int:
        """Insert rows, returning how many were new (conflicts are skipped, not counted). On
        PostgreSQL an ``INSERT INTO t (columns) VALUES (?, ...) ON CONFLICT ...`` of more than a
        few rows is COPYed into a temporary twin of ``t`` and inserted from there in one
        statement, the conflict clause applying as written: COPY streams the rows, where one
        INSERT per row costs a protocol round of its own (psycopg's pipelined executemany spent
        55% of the collector's ingest time there)."""
        if self.db.kind == "postgresql":
            rows = list(rows)
            insert = _INSERT.match(sql) if len(rows) >= COPY_FROM else None
            with self.conn.cursor() as cur:
                if insert is None:
                    cur.executemany(self._sql(sql), rows)
                    return cur.rowcount if cur.rowcount >= 0 else 0
                table, columns, tail = insert.group(1), insert.group(2), insert.group(3)
                twin = f"edgekit_in_{table}"
                # (again each time: a rolled-back transaction takes the table it created with it)
                cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {twin} (LIKE {table} INCLUDING DEFAULTS) "
                            "ON COMMIT DELETE ROWS")
                with cur.copy(f"COPY {twin} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                # Rows go in the order the caller gave (by the conflict target where there is one):
                # concurrent writers that take row locks in one order cannot deadlock.
                target = _TARGET.search(tail)
                order = target.group(1) if target else "ctid"
                cur.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {twin} ORDER BY {order} {tail}")
                new = max(cur.rowcount, 0)
                cur.execute(f"TRUNCATE {twin}")
                return new
        sql = self._sql(sql)
        before = self.conn.total_changes
        self.conn.executemany(sql, rows)
        return self.conn.total_changes - before

    def one(self, sql: str, params=()):
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params=()):
        return self.execute(sql, params).fetchall()

    def stream(self, sql: str, params=(), size: int = 1000) -> Iterator[list]:
        """Rows in chunks of ``size``: a server-side cursor on PostgreSQL, a lazy cursor on
        SQLite. Never the whole result in memory."""
        if self.db.kind == "postgresql":
            with self.conn.cursor(name=f"edgekit_{secrets.token_hex(4)}") as cur:
                cur.execute(self._sql(sql), params)
                while rows := cur.fetchmany(size):
                    yield rows
            return
        cur = self.conn.execute(sql, params)
        while rows := cur.fetchmany(size):
            yield rows

    def int_floor(self, expr: str) -> str:
        """SQL for the whole part of a non-negative ``expr``: PostgreSQL's CAST rounds to the
        nearest integer, SQLite's truncates (and has FLOOR only when built with math functions)."""
        return f"CAST(FLOOR({expr}) AS BIGINT)" if self.db.kind == "postgresql" else f"CAST({expr} AS INTEGER)"

    def meta(self, key: str) -> Optional[str]:
        """A value of the database's own key-value table (collector_meta), or None."""
        row = self.one("SELECT value FROM collector_meta WHERE key = ?", (key,))
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.execute("INSERT INTO collector_meta (key, value) VALUES (?, ?) "
                     "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def table_exists(self, name: str) -> bool:
        if self.db.kind == "postgresql":
            return self.one("SELECT to_regclass(?) IS NOT NULL", (name,))[0]
        return self.one("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))[0] > 0
