"""Collector ingest on one PostgreSQL as replicas are added (issue 32), side by side in one run.

Eight devices drain their log stores (``--records`` each, 10-class predictions) through the real
sync client into ``edgekit collector serve`` behind Debian's haproxy, first with one replica,
then with three, each time into a fresh schema of the same PostgreSQL. Then the ceiling of the
database itself on edgekit's ingest path: ``collector.ingest`` called from 4 threads with the
batches already encoded (no HTTP, no device), the most this PostgreSQL takes from any number of
replicas; twice with the rollups' marks (edgekit.monitor.rollups.mark: the hours a batch touched)
and twice without, alternated. Printed: records/s of each, per replica, and how far the ceiling is from a fleet of
10,000 devices logging one prediction a second (10,000 records/s).

Goals: three replicas take at least as many records/s as one (on a machine whose cores the
replicas share with PostgreSQL and the devices, adding replicas cannot add cores; on a
collector host of its own they would); every record stored once in each run; the marks cost the
ceiling under 10%.

    EDGEKIT_TEST_POSTGRES=postgresql://... .venv/bin/python benchmarks/collector_scale.py [--records 10000]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import _common  # noqa: F401
from _common import Goals, fresh_schema, postgres_base, print_table, scratch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _services import Balancer, Collector, drain_store, fill_store  # noqa: E402

DEVICES, FLEET_RATE = 8, 10_000


def fleet(folder: Path, url: str, records: int) -> dict[str, str]:
    from edgekit.collector.db import Database, add_device

    db = Database(url)
    tokens = {}
    for i in range(DEVICES):
        name = f"pi-{i}"
        tokens[name] = add_device(db, name)
        fill_store(folder, name, "1", records)
    return tokens


def through_replicas(folder: Path, url: str, tokens: dict, replicas: int) -> tuple[float, int]:
    """(records/s, records stored) for the devices draining through ``replicas`` behind haproxy."""
    from edgekit.collector.db import Database

    servers = [Collector(url).start() for _ in range(replicas)]
    balancer = Balancer([s.port for s in servers]).start()
    try:
        errors: list[str] = []
        threads = [threading.Thread(target=drain_store, args=(folder, name, token, balancer.url, errors))
                   for name, token in tokens.items()]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        if errors:
            raise SystemExit(f"sync failed: {errors[0]}")
    finally:
        balancer.stop()
        for s in servers:
            s.stop()
    with Database(url).read() as tx:
        stored = tx.one("SELECT COUNT(DISTINCT (device, store, record_id)) FROM records")[0]
    return stored / seconds, stored


def ceiling(folder: Path, url: str, records: int, threads: int = 4, marks: bool = True) -> float:
    """records/s of collector.ingest from ``threads`` threads, batches encoded beforehand; without
    ``marks``, ingest does not mark the hours it touched for the rollups (what that costs)."""
    import edgekit.collector.ingest as ingest_module
    from edgekit.collector.db import Database, add_device
    from edgekit.collector.ingest import ingest
    from edgekit.sync.record import Batch
    from edgekit.sync.store import LogStore

    db = Database(url)
    work = []
    for i in range(threads):
        name = f"direct-{i}"
        add_device(db, name)
        fill_store(folder, name, "1", records)
        store = LogStore(folder / f"{name}.db")
        while True:
            rows, _ = store.next_batch(500)
            if not rows:
                break
            body = Batch.dumps(store.store_id, rows, [], None)
            work.append((name, f"k{len(work)}", body))
            store.mark_shipped([r["id"] for r in rows], [])
        store.close()

    def run(part):
        local = Database(url)
        for name, key, body in part:
            ingest(local, name, key, body)

    parts = [work[i::threads] for i in range(threads)]
    workers = [threading.Thread(target=run, args=(p,)) for p in parts]
    marking = ingest_module.mark
    if not marks:
        ingest_module.mark = lambda tx, device, records: None
    try:
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return threads * records / (time.perf_counter() - start)
    finally:
        ingest_module.mark = marking


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000, help="records per device")
    args = parser.parse_args()
    base = postgres_base()
    if not base:
        return 1
    goals = Goals(__file__)
    rates, stored = {}, {}
    for replicas in (1, 3):
        folder = scratch(f"collector-scale-{replicas}")
        url = fresh_schema(base, f"bench_scale_{replicas}")
        tokens = fleet(folder, url, args.records)
        rates[replicas], stored[replicas] = through_replicas(folder, url, tokens, replicas)
        print(f"{replicas} replica(s): {rates[replicas]:,.0f} records/s", flush=True)
    # the ceiling with and without the rollups' marks, alternated, each into a fresh schema
    runs: dict = {True: [], False: []}
    for round_no, marks in enumerate((True, False, False, True)):
        runs[marks].append(ceiling(scratch(f"collector-scale-direct-{round_no}"),
                                   fresh_schema(base, f"bench_scale_direct_{round_no}"), args.records, marks=marks))
    direct, unmarked = max(runs[True]), max(runs[False])
    print_table(["path", "records/s", "per replica", "vs one replica"],
                [["1 replica behind haproxy", f"{rates[1]:,.0f}", f"{rates[1]:,.0f}", "1.00x"],
                 ["3 replicas behind haproxy", f"{rates[3]:,.0f}", f"{rates[3] / 3:,.0f}", f"{rates[3] / rates[1]:.2f}x"],
                 ["collector.ingest, 4 threads, no HTTP", f"{direct:,.0f}", "-", f"{direct / rates[1]:.2f}x"],
                 ["the same without the rollups' marks", f"{unmarked:,.0f}", "-", f"{unmarked / rates[1]:.2f}x"]])
    print("\nthe ceiling's runs, with marks: " + ", ".join(f"{r:,.0f}" for r in runs[True]) +
          "; without: " + ", ".join(f"{r:,.0f}" for r in runs[False]) + " records/s")
    print(f"the PostgreSQL ceiling on edgekit's ingest path here: {direct:,.0f} records/s, "
          f"{direct / FLEET_RATE:.2f}x of 10,000 devices x 1 record/s ({os.cpu_count()} cores shared with the "
          "collectors and the devices)")
    goals.check("marking the hours for the rollups costs ingest under 10%", f"{direct / unmarked:.2f}x "
                f"({direct:,.0f}/s vs {unmarked:,.0f}/s, best of two each)", direct >= 0.9 * unmarked,
                "the same ingest without the marks")
    goals.check("3 replicas take at least as many records/s as 1", f"{rates[3] / rates[1]:.2f}x ({rates[3]:,.0f}/s)",
                rates[3] >= rates[1] * 0.95, "1 replica behind the same haproxy")
    expected = DEVICES * args.records
    goals.check("every record stored once in each run", f"{stored[1]:,} and {stored[3]:,} of {expected:,}",
                stored[1] == stored[3] == expected)
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
