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
creating a table per stray day. SQLite and PostgreSQL databases made before this keep one
table; ``prune`` deletes their old rows in chunks instead.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime, timezone

DAY = 86400.0
WINDOW_DAYS = (400, 2)  # days before and after now that get a partition of their own
_known: dict[str, set[str]] = {}  # database URL -> partitions seen to exist (per process)
log = logging.getLogger("edgekit.collector")


def partitioned(tx) -> bool:
    return tx.db.kind == "postgresql" and bool(tx.one(
        "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "WHERE c.relname = 'records' AND c.relnamespace = to_regnamespace(current_schema())"))


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
    partitioned database (those ending before the cut), else chunked DELETEs. Sketches stay."""
    now = time.time() if now is None else now
    cut = now - older_than_s
    dropped, deleted, cut_rows = [], 0, None
    with db.connect() as tx:
        is_partitioned = partitioned(tx)
        if is_partitioned:
            parts = [r[0] for r in tx.all(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p "
                "ON p.oid = i.inhparent WHERE p.relname = 'records' AND p.relnamespace = to_regnamespace(current_schema())")]
    if is_partitioned:
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
        while True:  # bounded transactions: a big backlog never holds the write lock for long
            with db.connect() as tx:
                n = tx.execute("DELETE FROM records WHERE (device, store, record_id) IN (SELECT device, store, "
                               "record_id FROM records WHERE time < ? LIMIT ?)", (cut, chunk)).rowcount
            deleted += max(n, 0)
            if n < chunk:
                break
        cut_rows = cut
    feedback = 0
    if cut_rows is not None:
        with db.connect() as tx:  # feedback on the pruned predictions goes with them
            feedback = tx.execute("DELETE FROM feedback WHERE time < ?", (cut_rows,)).rowcount
    return {"cut": cut, "partitioned": is_partitioned, "partitions_dropped": dropped, "records_deleted": deleted,
            "feedback_deleted": max(feedback, 0)}
