"""Latency statistics as benchmark tools report them; p90 is the headline (MLPerf SingleStream)."""

from __future__ import annotations

import numpy as np


def latency_stats(ms: list[float], batch: int = 1) -> dict:
    if not ms:
        return {"n": 0}
    a = np.asarray(ms, dtype=np.float64)
    p = np.percentile(a, [50, 90, 95, 99])
    return {
        "n": int(a.size), "mean_ms": float(a.mean()), "std_ms": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min_ms": float(a.min()), "p50_ms": float(p[0]), "p90_ms": float(p[1]), "p95_ms": float(p[2]),
        "p99_ms": float(p[3]), "max_ms": float(a.max()),
        "throughput_per_s": float(batch * 1000.0 / a.mean()),
        "p99_reliable": bool(a.size >= 662),  # MLPerf: a p99 needs >= 662 samples
    }
