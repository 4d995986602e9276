"""Monitoring at fleet scale: `edgekit monitor report` over 1,000,000 logged predictions, in
SQLite and in PostgreSQL, with the default alert rules evaluated too.

The log is filled through the collector's own ingest (the signals and sketches are derived on
arrival, as in production): 50 devices in 5 groups, 2 versions, 48 hours, digits pictures with a
classifier's outputs, raw inputs kept for 5% (summaries for the rest), feedback on 20%. One
group sees inverted ink from hour 24. The report runs in its own process; its wall time and
peak RSS are measured from outside.

Goals (each database): report under 60 s; peak RSS under 1 GB; the inverted group's drift
found. Prints ingest and report rows/s.

    .venv/bin/python benchmarks/monitor_report.py [--records 1000000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401
import numpy as np
from _common import Goals, fresh_schema, print_table

MODEL = "digits-cnn"
BATCH = 1000


def _fake_outputs(labels: np.ndarray, rng, flip: np.ndarray) -> np.ndarray:
    """A classifier's logits: confident and right mostly, less so where ``flip`` (drifted input)."""
    logits = rng.normal(0, 1, (len(labels), 10)).astype(np.float32)
    right = np.where(flip, rng.integers(0, 10, len(labels)), labels)
    logits[np.arange(len(labels)), right] += np.where(flip, 1.5, 6.0)
    return logits


def populate(url: str, records: int, images: np.ndarray, labels: np.ndarray, now: float, hours: float = 48) -> float:
    """Fill the collector through ingest() with ``records`` spread over the last ``hours``; returns
    records per second."""
    from edgekit.collector.db import Database, add_device
    from edgekit.collector.ingest import ingest
    from edgekit.features import input_features
    from edgekit.sync.record import Batch, encode_array

    db = Database(url)
    devices = [(f"dev-{i:02d}", f"group-{i % 5}") for i in range(50)]
    for name, group in devices:
        add_device(db, name, group=group)
    rng = np.random.default_rng(0)
    start, done, batch_no = time.perf_counter(), 0, 0
    next_id = {name: 1 for name, _ in devices}
    while done < records:
        name, group = devices[batch_no % len(devices)]
        n = min(BATCH, records - done)
        idx = rng.integers(0, len(images), n)
        t = now - rng.uniform(0, hours * 3600, n)
        drifted = (group == "group-4") & (t > now - 24 * 3600)
        pics = np.where(drifted[:, None, None, None], 1.0 - images[idx], images[idx]).astype(np.float32)
        logits = _fake_outputs(labels[idx], rng, drifted)
        keep = rng.random(n) < 0.05
        # the device's per-record summaries (edgekit.features.summarise), computed for the batch at once
        feats = {k.split(".", 1)[1]: v.tolist() for k, v in input_features("input", pics).items()}
        recs, feedback = [], []
        for j in range(n):
            rid = next_id[name] + j
            x = pics[j:j + 1]
            summary = {"input": {"shape": [1, 1, 8, 8], **{k: v[j] for k, v in feats.items()}}}
            recs.append({"id": rid, "request_id": f"{name}-{rid}", "time": float(t[j]), "model": MODEL,
                         "version": "2" if j % 3 == 0 else "1", "variant": "int8", "latency_ms": float(rng.gamma(2, 0.4)),
                         "fallbacks": [], "cached": False, "outputs": {"logits": encode_array(logits[j:j + 1])},
                         "inputs": {"input": encode_array(x)} if keep[j] else None,
                         "summary": None if keep[j] else summary})
            if rng.random() < 0.2:
                feedback.append({"id": rid, "request_id": f"{name}-{rid}", "time": float(t[j]) + 5,
                                 "label": int(labels[idx[j]]), "outcome": None})
        next_id[name] += n
        body = Batch.dumps(f"store-{name}", recs, feedback)
        ingest(db, name, f"k-{name}-{batch_no}", body)
        with db.connect() as tx:
            tx.execute("UPDATE devices SET last_seen = ? WHERE name = ?", (now, name))
        done += n
        batch_no += 1
        if batch_no % 100 == 0:
            print(f"  {done:,} records ingested ({done / (time.perf_counter() - start):,.0f}/s)", flush=True)
    return records / (time.perf_counter() - start)


def reference_file(work: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """The held-out digits with a classifier's outputs: what `monitor reference` is given."""
    logits = _fake_outputs(labels, np.random.default_rng(1), np.zeros(len(labels), bool))
    np.savez(work / "ref.npz", input=images, labels=labels, **{"outputs/logits": logits})
    return work / "ref.npz"


def report(url: str, out: Path, window: str = "2d") -> dict:
    """`edgekit monitor report` in its own process: wall time and peak RSS from outside."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "edgekit", "monitor", "report", "--model", MODEL, "--window", window,
                          "--out", str(out), "--db", url, "--json"], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if run.returncode != 0:
        raise SystemExit(f"monitor report failed: {run.stderr[-2000:]}")
    info = json.loads(run.stdout)
    return {"seconds": seconds, "peak_mb": max(peak, before) / 1024, "alerts": info["alerts"], "records": info["records"]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--postgres", default=os.environ.get("EDGEKIT_TEST_POSTGRES"),
                        help="PostgreSQL URL (default: $EDGEKIT_TEST_POSTGRES); without one only SQLite runs")
    args = parser.parse_args()
    from edgekit.monitor.reference import build_reference, save_reference
    from edgekit.zoo import digits

    _, x_test, _, y_test = digits._split()
    now = time.time()
    goals = Goals(__file__)
    rows, cleanup = [], []
    with tempfile.TemporaryDirectory(prefix="monitor-bench-") as tmp:
        work = Path(tmp)
        ref = reference_file(work, x_test, y_test)
        backends = [("sqlite", f"sqlite:///{work / 'collector.db'}")]
        if args.postgres:
            backends.append(("postgresql", _fresh_schema(args.postgres)))
        else:
            print("PostgreSQL skipped: set EDGEKIT_TEST_POSTGRES or --postgres to measure it too")
        for kind, url in backends:
            if kind == "postgresql":
                cleanup.append(url)
            print(f"{kind}: ingesting {args.records:,} predictions ...", flush=True)
            ingest_rate = populate(url, args.records, x_test, y_test, now)
            from edgekit.collector.db import Database

            save_reference(Database(url), build_reference(ref, MODEL))
            print(f"{kind}: monitor report ...", flush=True)
            result = report(url, work / f"report-{kind}")
            drifted = {a["key"].get("group") for a in result["alerts"] if a["rule"] == "data drift" and a["key"]}
            rows.append([kind, f"{args.records:,}", f"{ingest_rate:,.0f}", f"{result['seconds']:.1f}",
                         f"{args.records / result['seconds']:,.0f}", f"{result['peak_mb']:.0f}", len(result["alerts"])])
            goals.check(f"{kind}: report over {args.records:,} predictions in < 60 s",
                        f"{result['seconds']:.1f} s ({args.records / result['seconds']:,.0f} rows/s)",
                        result["seconds"] < 60, baseline="the goal")
            goals.check(f"{kind}: report peak RSS < 1 GB", f"{result['peak_mb']:.0f} MB", result["peak_mb"] < 1024,
                        baseline="the goal")
            goals.check(f"{kind}: the inverted-ink group's drift is found", f"data drift alerts on {sorted(drifted)}",
                        "group-4" in drifted, baseline="the injected fault")
    for url in cleanup:
        _drop_schema(url)
    print()
    print_table(["database", "predictions", "ingest rows/s", "report s", "report rows/s", "peak RSS MB", "alerts"],
                rows)
    return goals.exit_code()


def _fresh_schema(url: str) -> str:
    return fresh_schema(url, f"bench_{os.getpid()}")


def _drop_schema(url: str) -> None:
    import psycopg

    base, _, schema = url.partition("options=-csearch_path%3D")
    with psycopg.connect(base[:-1], autocommit=True) as conn:  # without the '?' or '&' before options
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


if __name__ == "__main__":
    sys.exit(main())
