"""Device log store and shipping throughput, and memory while draining a large backlog.

- appending at least 20,000 small records per second to the device store;
- shipping at least 10,000 records per second to a collector on loopback (SQLite backend);
- device-side memory flat while draining a 1,000,000-record backlog (peak RSS sampled during the
  drain, compared with the RSS after the first batches);
- the collector's typed check of a batch (msgspec: types, bounds, base64 sizes) no slower than
  ``json.loads`` alone, which checks nothing (2,000 records with inputs and summaries, 500 labels).

    .venv/bin/python benchmarks/sync_throughput.py [--backlog 1000000]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import _common  # noqa: F401
import numpy as np
from _common import Goals, collector, scratch


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wire_check() -> tuple[float, float]:
    """(Batch.parse, json.loads) seconds for one batch: the best of 7, side by side."""
    import json

    from edgekit.sync.record import Batch, encode_array

    rng = np.random.default_rng(0)
    records = [{"id": i + 1, "request_id": f"r{i}", "time": 1.7e9 + i, "model": "digits", "version": "1",
                "variant": "int8", "latency_ms": 1.2, "fallbacks": [], "cached": False,
                "outputs": {"logits": encode_array(rng.random((1, 10), dtype=np.float32))},
                "inputs": {"x": encode_array(rng.random((1, 1, 8, 8), dtype=np.float32))},
                "summary": {"x": {"mean": 0.1, "std": 0.2, "min": 0.0, "max": 1.0, "nonfinite": 0,
                                  "shape": [1, 1, 8, 8]}}} for i in range(2000)]
    feedback = [{"id": i + 1, "request_id": f"r{i}", "time": 1.7e9, "label": i % 10, "outcome": None}
                for i in range(500)]
    body = Batch.dumps("s" * 32, records, feedback, {"dropped": 0, "pending": 0})
    typed, untyped = [], []
    for _ in range(7):
        t0 = time.perf_counter()
        Batch.parse(body)
        typed.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        json.loads(body)
        untyped.append(time.perf_counter() - t0)
    return min(typed), min(untyped)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--ship", type=int, default=50_000, help="records for the shipping-rate measurement")
    args = parser.parse_args()
    from edgekit.collector.db import Database, add_device
    from edgekit.sync import LogStore, SyncClient

    work = scratch("sync-bench-")
    x = {"input": np.ones((1, 8), np.float32)}
    y = {"logits": np.array([[0.1, 0.7, 0.2]], np.float32)}

    store = LogStore(work / "append.db", max_bytes=4 << 30)
    n = 50_000
    t0 = time.perf_counter()
    for _ in range(n):
        store.append(x, y, "m", latency_ms=1.0)
    append_rate = n / (time.perf_counter() - t0)
    store.close()

    db_url = f"sqlite:///{work / 'collector.db'}"
    token = add_device(Database(db_url), "bench")
    with collector(db_url) as (url, _):
        ship_store = LogStore(work / "ship.db", max_bytes=4 << 30)
        for _ in range(args.ship):
            ship_store.append(x, y, "m")
        client = SyncClient(ship_store, url, token, batch_size=2000)
        t0 = time.perf_counter()
        shipped = client.drain()
        ship_rate = args.ship / (time.perf_counter() - t0)
        assert shipped == args.ship

        print(f"filling a {args.backlog:,}-record backlog ...", flush=True)
        big = LogStore(work / "backlog.db", max_bytes=8 << 30)
        rows = [(f"r{i}", 0.0, "m", "", "", 1.0, "[]", '{"logits":{"dtype":"float32","shape":[1,3],"b64":"zczMPTMzMz/NzEw+"}}',
                 None, None, 0.0, 120) for i in range(args.backlog)]
        big.db.execute("BEGIN")
        big.db.executemany("INSERT INTO records (request_id, time, model, version, variant, latency_ms, fallbacks, "
                           "outputs, inputs, summary, hold_until, size) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        big.db.execute("COMMIT")
        del rows
        big.close()
        big = LogStore(work / "backlog.db", max_bytes=8 << 30)
        backlog_store = big.store_id
        drain_client = SyncClient(big, url, token, batch_size=2000)
        samples, stop = [], threading.Event()

        def sample():
            while not stop.is_set():
                samples.append(rss_mb())
                time.sleep(0.2)

        for _ in range(3):  # warm: the steady-state working set
            drain_client.ship_once()
        baseline = rss_mb()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        drained = drain_client.drain() + 3 * 2000
        drain_s = time.perf_counter() - t0
        stop.set()
        sampler.join()
    db = Database(db_url)
    with db.connect() as tx:  # what the collector really holds, per device store
        accepted = dict(tx.all("SELECT store, COUNT(*) FROM records GROUP BY store"))
    typed_s, loads_s = wire_check()
    peak = max(samples) if samples else baseline
    growth = peak - baseline
    print()
    goals = Goals(__file__)
    goals.check("append >= 20,000 records/s", f"{append_rate:,.0f}/s", append_rate >= 20_000,
                baseline="the device store, 10 ms group commits")
    goals.check("ship >= 10,000 records/s", f"{ship_rate:,.0f}/s", ship_rate >= 10_000,
                baseline="a loopback collector on SQLite")
    goals.check("every shipped record accepted once", f"{accepted.get(ship_store.store_id, 0):,} of {args.ship:,}",
                accepted.get(ship_store.store_id, 0) == args.ship == shipped, baseline="rows in the collector")
    goals.check("the drained backlog accepted once", f"{accepted.get(backlog_store, 0):,} of {args.backlog:,} "
                f"(client drained {drained:,})", accepted.get(backlog_store, 0) == args.backlog == drained,
                baseline="rows in the collector")
    goals.check("device memory flat while draining (< 25 MB growth)",
                f"+{growth:.1f} MB ({baseline:.0f} -> peak {peak:.0f} MB over {drain_s:.0f} s)", growth < 25,
                baseline="RSS after the first batches")
    goals.check("a batch's typed check no slower than json.loads alone",
                f"{typed_s * 1000:.1f} ms vs {loads_s * 1000:.1f} ms ({loads_s / typed_s:.2f}x)", typed_s <= loads_s,
                baseline="json.loads of the same 2,000-record batch, unchecked")
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
