"""Does history slow monitoring down? (issue 32) `edgekit monitor report --window 1d` on the same
fleet with 1 day and with 30 days of history in PostgreSQL, side by side in one run.

The same fleet as monitor_report.py (50 devices in 5 groups, 2 versions, digits pictures with a
classifier's outputs, inputs kept for 5%, feedback on 20%, one group drifted over the last day)
logs ``--per-day`` predictions a day into two fresh schemas of one PostgreSQL: one holds the
last day only, the other the last 30 days. New PostgreSQL databases keep records in one
partition per day (edgekit.collector.partitions), so a day's report reads that day's partitions
and the hourly sketches, whatever lies behind them. The two reports run alternately, three times
each; the goal compares their medians.

Then the week: `edgekit collector rollup` rolls the 30 days up (timed), and the record aggregates
of a 7-day window (edgekit.monitor.rollups.record_sums and record_counts: what a week's report read
from raw rows) are read from the rollups and from the records, alternately, three times each.
Goals: the same numbers (exact), and the rollups faster. The whole 7-day report is timed both ways
too, for information. At this fleet's rate a device logs a few records an hour, so a rollup row
stands for few records; at one record a second it stands for 3,600.

    EDGEKIT_TEST_POSTGRES=postgresql://... .venv/bin/python benchmarks/monitor_history.py [--per-day 20000]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401
from _common import Goals, fresh_schema, postgres_base, print_table
from monitor_report import MODEL, _drop_schema, populate, reference_file, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-day", type=int, default=20_000, help="predictions a day")
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    base = postgres_base()
    if not base:
        return 1
    from edgekit.collector.db import Database
    from edgekit.monitor.reference import build_reference, save_reference
    from edgekit.zoo import digits

    _, x_test, _, y_test = digits._split()
    now = time.time()
    goals = Goals(__file__)
    urls = {1: fresh_schema(base, "bench_history_1"), args.days: fresh_schema(base, f"bench_history_{args.days}")}
    with tempfile.TemporaryDirectory(prefix="monitor-history-") as tmp:
        work = Path(tmp)
        ref = reference_file(work, x_test, y_test)
        for days, url in urls.items():
            print(f"{days} day(s) of history: ingesting {days * args.per_day:,} predictions ...", flush=True)
            populate(url, days * args.per_day, x_test, y_test, now, hours=24 * days)
            save_reference(Database(url), build_reference(ref, MODEL))
        seconds = {days: [] for days in urls}
        for round_no in range(3):
            for days in (urls if round_no % 2 == 0 else reversed(list(urls))):
                result = report(urls[days], work / f"report-{days}-{round_no}", window="1d")
                seconds[days].append(result["seconds"])
        week = _week(urls[args.days], work, now)
    for url in urls.values():
        _drop_schema(url)
    short, long = statistics.median(seconds[1]), statistics.median(seconds[args.days])
    print_table(["history", "predictions", "report --window 1d (median of 3)", "runs"],
                [[f"{days} day(s)", f"{days * args.per_day:,}", f"{statistics.median(s):.2f} s",
                  ", ".join(f"{x:.2f}" for x in s)] for days, s in seconds.items()])
    goals.check(f"a 1-day report grows < 2x from 1 to {args.days} days of history", f"{long / short:.2f}x "
                f"({long:.2f} s vs {short:.2f} s)", long / short < 2.0, baseline="the same report on 1 day of history")
    print(f"\n`collector rollup` of {args.days} days: {week['roll_s']:.2f} s, {week['marks']:,} device hours into "
          f"{week['rollup_rows']:,} rollup rows ({week['all_records']:,} records)")
    raw, rolled = statistics.median(week["read"]["records"]), statistics.median(week["read"]["rollups"])
    print_table(["7-day window (" + f"{week['records']:,} records)", "record aggregates read (median of 3)",
                 "runs", "whole report"],
                [[source, f"{statistics.median(s):.3f} s", ", ".join(f"{x:.3f}" for x in s),
                  f"{week['report'][source]:.2f} s"] for source, s in week["read"].items()])
    goals.check("a week's record aggregates from the rollups equal those from the records",
                "equal" if week["same"] else f"different: {week['same_detail']}", week["same"])
    goals.check("a week's record aggregates are read faster from the rollups", f"{rolled / raw:.2f}x "
                f"({rolled:.3f} s vs {raw:.3f} s)", rolled < raw, baseline="reading them from the records")
    return goals.exit_code()


def _read(url: str, start: float, end: float) -> tuple[float, list]:
    """The record aggregates of [start, end) as a week's report reads them; (seconds, rows)."""
    from edgekit.collector.db import Database
    from edgekit.monitor.rollups import NO_THRESHOLD, record_counts, record_sums
    from edgekit.monitor.reference import load_reference

    db = Database(url)
    reference = load_reference(db, MODEL)
    low = reference.low_confidence if reference and reference.low_confidence is not None else NO_THRESHOLD
    t0 = time.perf_counter()
    with db.read() as tx:
        rows = [sorted(record_sums(tx, MODEL, start, end, low))] + \
            [sorted(record_counts(tx, MODEL, start, end, kind)) for kind in ("fallbacks", "variant")]
    return time.perf_counter() - t0, rows


def _differences(expected: list, got: list) -> list[str]:
    """Counts exactly, sums of floats within 1e-9 (the database adds them in its own order)."""
    out = []
    for kind, (rows_a, rows_b) in zip(("sums", "fallbacks", "variants"), zip(expected, got)):
        if len(rows_a) != len(rows_b):
            out.append(f"{kind}: {len(rows_a)} vs {len(rows_b)} rows")
            continue
        for a, b in zip(rows_a, rows_b):
            for x, y in zip(a, b):
                close = math.isclose(x, y, rel_tol=1e-9) if isinstance(x, float) and isinstance(y, float) else x == y
                if not close:
                    out.append(f"{kind} {a[:2]}: {x} vs {y}")
    return out


def _week(url: str, work: Path, now: float) -> dict:
    """Roll the history up, then read a week from the rollups and from the records (all hours
    marked dirty: what a reader does for hours not rolled up yet), alternately."""
    import subprocess

    from edgekit.collector.db import Database

    db = Database(url)
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "edgekit", "collector", "rollup", "--db", url, "--json"],
                         capture_output=True, text=True)
    roll_s = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"collector rollup failed: {run.stderr[-2000:]}")
    import json

    marks = json.loads(run.stdout)["marks"]
    with db.read() as tx:
        rollup_rows = tx.one("SELECT COUNT(*) FROM record_hours")[0]
        all_records = tx.one("SELECT COUNT(*) FROM records")[0]
        records = tx.one("SELECT COUNT(*) FROM records WHERE model = ? AND time >= ? AND time < ?",
                         (MODEL, now - 7 * 86400, now))[0]

    def dirty(on: bool) -> None:
        with db.connect() as tx:
            if on:  # every hour read from the records again, as before a roll
                tx.execute("INSERT INTO rollup_dirty (model, hour, device, stamp) SELECT DISTINCT model, hour, device, -1 "
                           "FROM record_hours ON CONFLICT DO NOTHING")
            else:  # only the marks set here
                tx.execute("DELETE FROM rollup_dirty WHERE stamp = -1")

    read: dict = {"records": [], "rollups": []}
    results, report_s = {}, {}
    for round_no in range(3):
        for source in (("records", "rollups") if round_no % 2 == 0 else ("rollups", "records")):
            dirty(source == "records")
            seconds, rows = _read(url, now - 7 * 86400, now)
            read[source].append(seconds)
            results[source] = rows
            if round_no == 0:
                report_s[source] = report(url, work / f"report-week-{source}", window="7d")["seconds"]
    differences = _differences(results["records"], results["rollups"])
    same, detail = not differences, "; ".join(differences[:3])
    return {"roll_s": roll_s, "marks": marks, "rollup_rows": rollup_rows, "all_records": all_records,
            "records": records, "read": read, "report": report_s, "same": same, "same_detail": detail}


if __name__ == "__main__":
    sys.exit(main())
