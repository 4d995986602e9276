"""``edgekit collector lake``: add to the telemetry lake what the collector received since its
last run.

Each run reads the rows received after the lake's watermark (up to a minute ago: a batch is
stamped when its ingest starts and becomes visible when it commits, so a row stamped just
before a run may commit just after it) and writes them as new files. Hourly sketches are not a
log in the database (a late record adds to an old hour's counts), so a run reads the hours its
records touched and writes by how much each count grew since the counts already in the lake:
adding up a sketch's rows in the lake gives the database's count. Nothing already in the lake is
rewritten, and the watermark moves only once the run's files are in.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

from ..errors import EdgekitError
from .layout import (BY_DAY, TABLES, WHOLE, LakeState, arrow_schema, arrow_table, day_of, files, read_state, run_of, quoted,
                     uncommitted, write_state)

# How far behind the clock a run stops: a batch is stamped `received` when its ingest starts and
# becomes visible when it commits, so rows stamped just before a run may commit after it.
SETTLE_S = 60.0
CHUNK = 20000


class _Logs:
    """Writers of one log table's new rows, one file per day folder."""

    def __init__(self, stage: Path, table: str, run: int):
        self.stage, self.table, self.run = stage, table, run
        self.schema = arrow_schema(table)
        self.writers: dict = {}
        self.rows = 0

    def add(self, chunk: list) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        frame = arrow_table(chunk, self.schema)
        at = self.schema.names.index(BY_DAY[self.table])
        days = [day_of(row[at]) for row in chunk]
        for day in sorted(set(days)):
            writer = self.writers.get(day)
            if writer is None:
                folder = self.stage / self.table / f"date={day}"
                folder.mkdir(parents=True, exist_ok=True)
                writer = self.writers[day] = pq.ParquetWriter(folder / f"part-{self.run}.parquet", self.schema)
            writer.write_table(frame.take(pa.array([i for i, d in enumerate(days) if d == day])))
        self.rows += len(chunk)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def _whole(stage: Path, table: str, run: int, rows: list) -> None:
    import pyarrow.parquet as pq

    (stage / table).mkdir(parents=True, exist_ok=True)
    pq.write_table(arrow_table(rows, arrow_schema(table)), stage / table / f"part-{run}.parquet")


def _sketch_growth(tx, lake: Path, stage: Path, state: LakeState, run: int, touched: dict) -> int:
    """The touched hours' sketch rows as they are now, less what the lake already counts."""
    import duckdb
    import pyarrow.parquet as pq

    schema = arrow_schema("sketches")
    now_file = stage / "_sketches_now.parquet"
    with pq.ParquetWriter(now_file, schema) as writer:
        for model, hours in sorted(touched.items()):
            hours = sorted(hours)
            for i in range(0, len(hours), 500):
                part = hours[i:i + 500]
                for chunk in tx.stream("SELECT model, version, device, hour, feature, bucket, n FROM sketches "
                                       f"WHERE model = ? AND hour IN ({', '.join('?' * len(part))})",
                                       (model, *part), CHUNK):
                    writer.write_table(arrow_table(chunk, schema))
    keys = ("model", "version", "device", "hour", "feature", "bucket")
    before = files(lake, "sketches", state.runs) if state.runs else []
    con = duckdb.connect()
    try:
        con.execute(f"CREATE VIEW now_ AS SELECT * FROM read_parquet({quoted([now_file])})")
        if before:
            con.execute(f"CREATE VIEW before_ AS SELECT {', '.join(keys)}, SUM(n) AS n FROM read_parquet("
                        f"{quoted(before)}) WHERE (model, hour) IN (SELECT DISTINCT model, hour FROM now_) "
                        f"GROUP BY {', '.join(keys)}")
        else:
            con.execute("CREATE VIEW before_ AS SELECT * FROM now_ WHERE false")
        out = stage / "sketches" / f"part-{run}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        on = " AND ".join(f"c.{k} = b.{k}" for k in keys)
        con.execute(f"COPY (SELECT {', '.join('c.' + k for k in keys)}, CAST(c.n - COALESCE(b.n, 0) AS BIGINT) AS n "
                    f"FROM now_ c LEFT JOIN before_ b ON {on} WHERE c.n <> COALESCE(b.n, 0) "
                    f"ORDER BY c.model, c.hour) TO {quoted([out])[1:-1]} (FORMAT parquet)")
        return con.execute(f"SELECT COUNT(*) FROM read_parquet({quoted([out])})").fetchone()[0]
    finally:
        con.close()
        now_file.unlink(missing_ok=True)


def update(db, out: str | Path, settle_s: float = SETTLE_S, now: Optional[float] = None,
           progress: Optional[Callable[[str, int], None]] = None) -> dict:
    """Make the lake at ``out``, or add a run to it. ``progress(table, rows)`` after each chunk."""
    out = Path(out)
    fresh = not out.exists()
    state = LakeState(0, 0.0) if fresh else read_state(out)
    run = state.runs + 1
    as_of = (time.time() if now is None else now) - settle_s
    if not fresh:
        for leftover in uncommitted(out, state.runs):  # a run that did not finish: its own files
            leftover.unlink()
    stage = (out.parent / f".{out.name}.tmp-{os.getpid()}") if fresh else (out / f".run-{run}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    counts: dict = {}
    try:
        touched: dict = {}
        with db.read() as tx:
            for table in ("records", "feedback"):
                logs = _Logs(stage, table, run)
                names = [c for c, _ in TABLES[table]]
                try:
                    for chunk in tx.stream(f"SELECT {', '.join(names)} FROM {table} WHERE received > ? AND "
                                           "received <= ?", (state.received_until, as_of), CHUNK):
                        logs.add(chunk)
                        if table == "records":
                            t, m = names.index("time"), names.index("model")
                            for row in chunk:
                                if row[t] is not None and math.isfinite(row[t]):
                                    touched.setdefault(row[m], set()).add(int(row[t] // 3600) * 3600)
                        if progress:
                            progress(table, logs.rows)
                finally:
                    logs.close()
                counts[table] = logs.rows
            counts["sketches"] = _sketch_growth(tx, out, stage, state, run, touched) if touched else 0
            for table in WHOLE:
                _whole(stage, table, run, tx.all(f"SELECT {', '.join(c for c, _ in TABLES[table])} FROM {table}"))
        new = LakeState(run, max(as_of, state.received_until))
        if fresh:
            write_state(stage, new)
            if out.exists():
                raise EdgekitError(f"{out} appeared while the lake was being made", "make the lake in a new folder")
            os.replace(stage, out)
        else:  # file by file: a reader lists only the runs the state names, so none sees half a run
            for path in sorted(p for p in stage.rglob("part-*.parquet")):
                target = out / path.relative_to(stage)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
            write_state(out, new)
            shutil.rmtree(stage, ignore_errors=True)
            for table in WHOLE:  # only the last run's file is read
                for old in (out / table).glob("part-*.parquet"):
                    if run_of(old) < run:
                        old.unlink()
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return {"lake": str(out), "run": run, "received_until": new.received_until,
            "records": counts["records"], "feedback": counts["feedback"], "sketch_rows": counts["sketches"]}
