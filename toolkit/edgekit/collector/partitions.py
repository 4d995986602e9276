"""Time-partitioned records on PostgreSQL, and a retention policy that drops whole days.

A fleet's log grows by the day and is read by time window (monitoring, canaries, exports), so a
new PostgreSQL collector database declares ``records`` partitioned by range of ``time``, one
partition per UTC day (PostgreSQL's native declarative partitioning). A query over a window
reads only the days it covers, however long the history, and ``edgekit collector prune`` drops
old days as whole tables: no row-by-row DELETE, no bloat, no VACUUM to wait for. The hourly
sketches that monitoring reads for drift and quantiles are kept; they are the history's summary.

A day's partition is created before the first batch that needs it, in a transaction of its own
(creating a partition locks the parent briefly; inside an ingest transaction that already holds
row locks it could deadlock with another replica's). Times outside [now - 400 days, now + 2 days]
(a device whose clock is wrong) go to the ``records_other`` default partition rather than
creating a table per stray day. SQLite keeps one table; ``prune`` deletes its old rows in
chunks instead.

A PostgreSQL database made before partitioning is converted by ``convert`` (``edgekit collector
partition``) without copying a row: the old table becomes the partition of everything before
tomorrow (``records_legacy``, PostgreSQL's ATTACH PARTITION), days from tomorrow on get their
own partitions, and ``prune`` deletes from the old one in chunks until the whole of it is past
the retention, then drops it.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime, timezone

from ..errors import EdgekitError
from ..monitor.derive import HOUR
from .db import INDEXES, PARTITIONED_RECORDS, partitioned

DAY = 86400.0
LEGACY = "records_legacy"  # an older database's records table, attached whole as one partition
WINDOW_DAYS = (400, 2)  # days before and after now that get a partition of their own
_known: dict[str, set[str]] = {}  # database URL -> partitions seen to exist (per process)
log = logging.getLogger("edgekit.collector")


def name_of(day: int) -> str:
    return "records_d" + datetime.fromtimestamp(day * DAY, timezone.utc).strftime("%Y%m%d")


def _end_of(name: str) -> float:
    """When the day of partition ``name`` (name_of's) ends."""
    return datetime.strptime(name[len("records_d"):], "%Y%m%d").replace(tzinfo=timezone.utc).timestamp() + DAY


def ensure(db, times) -> None:
    """The partitions of the UTC days of ``times`` (within the window), created where missing."""
    known = _known.setdefault(db.url, set())
    now_day = int(time.time() // DAY)
    days = {int(t // DAY) for t in times if isinstance(t, (int, float)) and math.isfinite(t)}
    days = {d for d in days if now_day - WINDOW_DAYS[0] <= d <= now_day + WINDOW_DAYS[1] and name_of(d) not in known}
    for day in sorted(days):
        name = name_of(day)
        try:
            with db.connect() as tx:
                tx.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF records FOR VALUES FROM "
                           f"({day * DAY!r}) TO ({(day + 1) * DAY!r})")
        except Exception as exc:  # another replica made it a moment ago, or the default partition
            # already holds rows of that day (then they stay there): either way the insert goes on
            log.info("partition %s: %s", name, str(exc).splitlines()[0])
        known.add(name)


def prune(db, older_than_s: float, now: float | None = None, chunk: int = 10000) -> dict:
    """Drop the records (and their feedback) from before ``now - older_than_s``: whole days on a
    partitioned database (those ending before the cut), else chunked DELETEs. Sketches and the
    hourly rollups stay. The cut is on a whole hour: an hour's rollup is recounted from its records
    only while all of them are there (collector_meta's pruned_until says up to where they are not)."""
    now = time.time() if now is None else now
    cut = float(int((now - older_than_s) // HOUR) * HOUR)
    dropped, deleted, cut_rows = [], 0, None
    with db.connect() as tx:
        is_partitioned = partitioned(tx)
        if is_partitioned:
            parts = [r[0] for r in tx.all(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p "
                "ON p.oid = i.inhparent WHERE p.relname = 'records' AND p.relnamespace = to_regnamespace(current_schema())")]
    if is_partitioned:
        if LEGACY in parts:  # an older database's table: rows deleted until all of it is past the cut
            with db.read() as tx:
                until = float(tx.meta("legacy_until"))
            if until <= cut:
                with db.connect() as tx:
                    deleted += tx.one(f"SELECT COUNT(*) FROM {LEGACY}")[0]
                    tx.execute(f"DROP TABLE {LEGACY}")
                dropped.append(LEGACY)
            else:
                deleted += _delete_before(db, LEGACY, cut, chunk)
            cut_rows = min(cut, until)
        for name in sorted(parts):
            if not name.startswith("records_d"):
                continue
            end = _end_of(name)
            if end <= cut:
                with db.connect() as tx:
                    deleted += tx.one(f"SELECT COUNT(*) FROM {name}")[0]
                    tx.execute(f"DROP TABLE {name}")
                dropped.append(name)
                _known.get(db.url, set()).discard(name)
                cut_rows = end  # names sort by day: the last one dropped ends latest
    else:
        deleted = _delete_before(db, "records", cut, chunk)
        cut_rows = cut
    feedback = 0
    if cut_rows is not None:
        with db.connect() as tx:  # feedback on the pruned predictions goes with them
            feedback = tx.execute("DELETE FROM feedback WHERE time < ?", (cut_rows,)).rowcount
            before = tx.meta("pruned_until")
            if before is None or float(before) < cut_rows:
                tx.set_meta("pruned_until", repr(float(cut_rows)))
    return {"cut": cut, "partitioned": is_partitioned, "partitions_dropped": dropped, "records_deleted": deleted,
            "feedback_deleted": max(feedback, 0)}


def _delete_before(db, table: str, cut: float, chunk: int) -> int:
    """Rows of ``table`` older than ``cut``, deleted in bounded transactions: a big backlog never
    holds the write lock for long."""
    deleted = 0
    while True:
        with db.connect() as tx:
            n = tx.execute(f"DELETE FROM {table} WHERE (device, store, record_id) IN (SELECT device, store, "
                           f"record_id FROM {table} WHERE time < ? LIMIT ?)", (cut, chunk)).rowcount
        deleted += max(n, 0)
        if n < chunk:
            return deleted


def convert(db, now: float | None = None) -> dict:
    """Partition an older PostgreSQL database's records by day, copying no row: the table is
    attached whole as the partition of everything before tomorrow, UTC. Ingest waits while it
    runs: PostgreSQL builds the partitioned key's index over the table and checks its range."""

    if db.kind != "postgresql":
        raise EdgekitError("only a PostgreSQL collector database is partitioned",
                           "SQLite keeps records in one table; edgekit collector prune deletes old rows in chunks")
    now = time.time() if now is None else now
    until = (int(now // DAY) + 1) * DAY
    started = time.perf_counter()
    with db.connect() as tx:
        if partitioned(tx):
            return {"converted": False, "records": None, "legacy_until": None, "seconds": 0.0}
        tx.execute("LOCK TABLE records IN ACCESS EXCLUSIVE MODE")
        rows = tx.one("SELECT COUNT(*) FROM records")[0]
        tx.execute(f"ALTER TABLE records RENAME TO {LEGACY}")
        key = tx.one("SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(?) AND contype = 'p'", (LEGACY,))
        tx.execute(f"ALTER TABLE {LEGACY} DROP CONSTRAINT {key[0]}")  # the parent's key adds time to it
        for (index,) in tx.all("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND "
                               "tablename = ?", (LEGACY,)):  # their names go to the parent's indexes
            tx.execute(f"ALTER INDEX {index} RENAME TO legacy_{index}")
        columns = [r[0] for r in tx.all("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                                        "current_schema() AND table_name = ? ORDER BY ordinal_position", (LEGACY,))]
        # rows stamped past the cut (a device clock ahead) move to the default partition
        ahead = tx.all(f"DELETE FROM {LEGACY} WHERE time >= ? RETURNING {', '.join(columns)}", (until,))
        tx.execute(PARTITIONED_RECORDS)
        tx.execute(f"ALTER TABLE records ATTACH PARTITION {LEGACY} FOR VALUES FROM (MINVALUE) TO ({until!r})")
        tx.execute("CREATE TABLE IF NOT EXISTS records_other PARTITION OF records DEFAULT")
        for statement in INDEXES:  # an equivalent index of the old table is attached, not built again
            tx.execute(statement)
        if ahead:
            tx.executemany(f"INSERT INTO records ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                           ahead)
        tx.set_meta("legacy_until", repr(until))
    db.partitioned = True
    return {"converted": True, "records": rows, "legacy_until": until, "moved_to_default": len(ahead),
            "seconds": round(time.perf_counter() - started, 2)}
