"""One holder at a time across collector replicas and loop daemons: PostgreSQL advisory locks.

Several ``edgekit collector serve`` replicas over one PostgreSQL each run the canary decision on a
timer, and a loop daemon may run on more than one machine. Who acts is settled by the database
they share, not by a lease table of our own: ``pg_try_advisory_lock`` on a connection opened
for the purpose. PostgreSQL frees the lock when that connection ends, so a holder that is
``kill -9``ed, loses its machine or its network hands over at once, with no expiry to wait for
and no clock to trust. On SQLite one machine's processes share a file whose write lock already
serialises them; the callers keep their own rules there.
"""

from __future__ import annotations

import hashlib
import os
import socket
from contextlib import contextmanager
from typing import Iterator

from .errors import EdgekitError, first_line


def process_name() -> str:
    """host:pid, how a replica or a loop daemon names itself where it records what it did."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (advisory locks are numbered, not named)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def exclusive(db, name: str) -> Iterator[bool]:
    """Yields whether this process holds ``name`` (never waits): on PostgreSQL an advisory lock on a
    connection of its own, released on exit or when the process dies; elsewhere always True."""
    if db.kind != "postgresql":
        yield True
        return
    import psycopg

    try:
        conn = psycopg.connect(db.url, autocommit=True)
    except psycopg.OperationalError as exc:
        raise EdgekitError(f"cannot connect to {db.url}: {first_line(exc)}") from None
    try:
        key = lock_key(name)
        held = bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0])
        try:
            yield held
        finally:
            if held and not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()


def holder(db, name: str) -> dict | None:
    """Who holds ``name`` on PostgreSQL (pid, client address, since when), or None."""
    if db.kind != "postgresql":
        return None
    key = lock_key(name)
    with db.read() as tx:
        row = tx.one("SELECT a.pid, a.client_addr::text, a.backend_start FROM pg_locks l JOIN pg_stat_activity a "
                     "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND "
                     "((l.classid::bigint << 32) | l.objid::bigint) = ?", (key,))
    return {"pid": row[0], "client": row[1], "since": str(row[2])} if row else None
