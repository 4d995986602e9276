"""Monitoring over the telemetry lake (issue 32): `edgekit monitor report --window 7d` from the
collector's PostgreSQL, and from the lake with DuckDB and with Spark (local mode), same fleet,
same window, side by side in one run.

The fleet of monitor_report.py (50 devices in 5 groups, 2 versions, digits pictures with a
classifier's outputs, inputs kept for 5%, feedback on 20%, one group drifted over the last day)
logs ``--per-day`` predictions a day for a week into a fresh PostgreSQL schema. `edgekit
collector lake` then makes the lake (its rate is printed), and each report runs in its own
process, alternately, three rounds. The goal: every number of the lake's reports equals the
database's (counts exactly, floats within 1e-6), the database's report ending where the lake
does (--end). Times are printed against the database's, for
information: Spark in local mode on 2 cores pays for its JVM and its planner on every query.

    EDGEKIT_TEST_POSTGRES=postgresql://... .venv/bin/python benchmarks/lake_report.py [--per-day 20000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401
from _common import Goals, fresh_schema, postgres_base, print_table
from monitor_report import MODEL, _drop_schema, populate, reference_file

SOURCES = {"database": [], "lake, DuckDB": ["--engine", "duckdb"], "lake, Spark": ["--engine", "spark"]}


def _report(source: list, url: str, lake: Path, end: float, out: Path) -> tuple[float, dict]:
    where = ["--db", url, "--end", repr(end)] if not source else ["--lake", str(lake), *source]
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "edgekit", "monitor", "report", "--model", MODEL, "--window", "7d",
                          "--out", str(out), *where, "--json"], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"monitor report {' '.join(where)} failed: {run.stderr[-2000:]}")
    seconds = time.perf_counter() - t0
    return seconds, json.loads((out / "report.json").read_text())


def _differences(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys differ"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, (int, float)):
        return [] if abs(a - b) <= 1e-6 * max(1.0, abs(a)) else [f"{path}: {a} vs {b}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-day", type=int, default=20_000, help="predictions a day")
    args = parser.parse_args()
    base = postgres_base()
    if not base:
        return 1
    from edgekit.collector.db import Database
    from edgekit.lake.write import update
    from edgekit.monitor.reference import build_reference, save_reference
    from edgekit.zoo import digits

    _, x_test, _, y_test = digits._split()
    goals = Goals(__file__)
    url = fresh_schema(base, "bench_lake")
    with tempfile.TemporaryDirectory(prefix="lake-report-") as tmp:
        work = Path(tmp)
        ref = reference_file(work, x_test, y_test)
        total = 7 * args.per_day
        print(f"a week of history: ingesting {total:,} predictions ...", flush=True)
        populate(url, total, x_test, y_test, time.time(), hours=24 * 7)
        save_reference(Database(url), build_reference(ref, MODEL))
        t0 = time.perf_counter()
        made = update(Database(url), work / "lake", settle_s=0)
        lake_s = time.perf_counter() - t0
        seconds: dict = {name: [] for name in SOURCES}
        docs: dict = {}
        for round_no in range(3):
            for name in (SOURCES if round_no % 2 == 0 else reversed(list(SOURCES))):
                s, doc = _report(SOURCES[name], url, work / "lake", made["received_until"],
                                 work / f"report-{round_no}-{len(docs)}")
                seconds[name].append(s)
                docs[name] = doc
    _drop_schema(url)
    print(f"\ncollector lake: {made['records']:,} records, {made['feedback']:,} feedback rows, "
          f"{made['sketch_rows']:,} sketch rows in {lake_s:.1f} s ({made['records'] / lake_s:,.0f} records/s)\n")
    base_s = statistics.median(seconds["database"])
    print_table(["source", "report --window 7d (median of 3)", "vs the database", "runs"],
                [[name, f"{statistics.median(s):.2f} s", f"{statistics.median(s) / base_s:.2f}x",
                  ", ".join(f"{x:.2f}" for x in s)] for name, s in seconds.items()])
    expected = docs["database"]["snapshot"]
    for name in ("lake, DuckDB", "lake, Spark"):
        got = docs[name]["snapshot"]
        diff = _differences({k: got[k] for k in ("total", "scopes")}, {k: expected[k] for k in ("total", "scopes")})
        diff += _differences(docs[name]["alerts"], docs["database"]["alerts"], "alerts")
        goals.check(f"{name}: every signal of every scope, and every alert, as the database gives them",
                    f"{expected['total']['signals']['records']:,} records, " +
                    ("no difference" if not diff else f"{len(diff)} differences, e.g. {diff[:3]}"), not diff,
                    baseline="the report from PostgreSQL")
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
