"""Data expectations at fleet scale: a suggested digits suite over 1,000,000 rows of 8x8 pictures
(Parquet, streamed in chunks), rows per second and peak memory, each run in its own process.

Goals: >= 1,000,000 rows per minute; memory bounded by the chunk, not the table: the peak RSS
over 1M rows stays within 64 MB of the peak over 250k rows (same chunk size; the uniqueness
check keeps 8 bytes per row, which is the only part that grows).

    .venv/bin/python benchmarks/expect_throughput.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import _common  # noqa: F401
import numpy as np
from _common import Goals, print_table

RUN = r"""
import json, resource, sys, time
from edgekit.testing import Suite, run_suite
suite = Suite.load(sys.argv[1])
t0 = time.perf_counter()
result = run_suite(suite, sys.argv[2], chunk=int(sys.argv[3]))
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": result.rows, "seconds": seconds, "peak_mb": peak, "failed": len(result.failed())}))
"""


def write_parquet(path: Path, rows: int, x: np.ndarray, y: np.ndarray, chunk: int = 100_000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    writer = None
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        index = rng.integers(0, len(x), n)
        pictures = np.clip(x[index] + rng.normal(0, 0.01, (n, 64)).astype(np.float32), 0, 1)
        table = pa.table({"input": pa.FixedSizeListArray.from_arrays(pictures.ravel(), 64),
                          "labels": y[index]})
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=65536)
    args = parser.parse_args()
    from edgekit.zoo import digits

    x_train, _, y_train, _ = digits._split()
    with tempfile.TemporaryDirectory(prefix="expect-bench-") as tmp:
        return measure(Path(tmp), args, x_train.reshape(len(x_train), 64), y_train)


def measure(work: Path, args, x_train: np.ndarray, y_train: np.ndarray) -> int:
    from edgekit.testing import suggest

    np.savez(work / "reference.npz", input=x_train, labels=y_train)
    suite = suggest(work / "reference.npz")
    # Noisy copies repeat pictures: the reference had none, so that check would fail on purpose-made data.
    suite = type(suite)(suite.name, tuple(c for c in suite.checks if c.kind not in ("unique", "row_count")))
    (work / "suite.toml").write_text(suite.to_toml())
    runs = {}
    for rows in (args.rows // 4, args.rows):
        path = work / f"rows-{rows}.parquet"
        print(f"writing {rows:,} rows ...", flush=True)
        write_parquet(path, rows, x_train, y_train)
        out = subprocess.run([sys.executable, "-c", RUN, str(work / "suite.toml"), str(path), str(args.chunk)],
                             capture_output=True, text=True, check=True)
        runs[rows] = json.loads(out.stdout.strip().splitlines()[-1])
    print()
    print_table(["rows", "seconds", "rows/s", "peak RSS MB", "failed expectations"],
                [[f"{r:,}", f"{v['seconds']:.1f}", f"{v['rows'] / v['seconds']:,.0f}", f"{v['peak_mb']:.0f}", v["failed"]]
                 for r, v in runs.items()])
    big, small = runs[args.rows], runs[args.rows // 4]
    goals = Goals(__file__)
    per_minute = big["rows"] / big["seconds"] * 60
    goals.check(">= 1,000,000 rows per minute", f"{per_minute:,.0f} rows/min ({len(suite.checks)} expectations)",
                per_minute >= 1_000_000 and big["rows"] == args.rows, baseline="the goal")
    goals.check("memory bounded by the chunk", f"peak {big['peak_mb']:.0f} MB for {args.rows:,} rows vs "
                f"{small['peak_mb']:.0f} MB for {args.rows // 4:,}", big["peak_mb"] - small["peak_mb"] <= 64,
                baseline="the same suite over a 4x smaller file")
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
