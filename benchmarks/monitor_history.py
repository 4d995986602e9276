"""Does history slow monitoring down? (issue 32) `edgekit monitor report --window 1d` on the same
fleet with 1 day and with 30 days of history in PostgreSQL, side by side in one run.

The same fleet as monitor_report.py (50 devices in 5 groups, 2 versions, digits pictures with a
classifier's outputs, inputs kept for 5%, feedback on 20%, one group drifted over the last day)
logs ``--per-day`` predictions a day into two fresh schemas of one PostgreSQL: one holds the
last day only, the other the last 30 days. New PostgreSQL databases keep records in one
partition per day (edgekit.collector.partitions), so a day's report reads that day's partitions
and the hourly sketches, whatever lies behind them. The two reports run alternately, three times
each; the goal compares their medians. A 7-day report over the longer history is printed for
information: it reads seven days of raw rows (hourly rollups of the record aggregates are the
next step), so it is expected to take longer.

    EDGEKIT_TEST_POSTGRES=postgresql://... .venv/bin/python benchmarks/monitor_history.py [--per-day 20000]
"""

from __future__ import annotations

import argparse
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
        week = report(urls[args.days], work / "report-week", window="7d")
    for url in urls.values():
        _drop_schema(url)
    short, long = statistics.median(seconds[1]), statistics.median(seconds[args.days])
    print_table(["history", "predictions", "report --window 1d (median of 3)", "runs"],
                [[f"{days} day(s)", f"{days * args.per_day:,}", f"{statistics.median(s):.2f} s",
                  ", ".join(f"{x:.2f}" for x in s)] for days, s in seconds.items()])
    print(f"\nreport --window 7d over {args.days} days of history: {week['seconds']:.2f} s "
          f"({week['records']:,} records in its window; reads raw rows)")
    goals.check(f"a 1-day report grows < 2x from 1 to {args.days} days of history", f"{long / short:.2f}x "
                f"({long:.2f} s vs {short:.2f} s)", long / short < 2.0, baseline="the same report on 1 day of history")
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
