"""Latency of several sessions measured side by side (A B C A B C ...), medians per session.

Interleaving keeps a comparison valid while a shared machine's speed drifts; the sessions are
opened with onnxruntime's thread spinning off so that they do not steal each other's cores.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def interleaved(runs: dict[str, Callable[[], object]], warmup: int = 5, min_rounds: int = 20,
                max_rounds: int = 200, budget_s: float = 20.0, clock=time.perf_counter) -> dict[str, list[float]]:
    """Call every function once per round, rotating the start; stop after ``min_rounds`` once
    ``budget_s`` is spent (or at ``max_rounds``). Returns milliseconds per call for each key."""
    keys = list(runs)
    for key in keys:
        for _ in range(warmup):
            runs[key]()
    samples: dict[str, list[float]] = {k: [] for k in keys}
    start = clock()
    for round_no in range(max_rounds):
        offset = round_no % len(keys)
        for key in keys[offset:] + keys[:offset]:
            t0 = clock()
            runs[key]()
            samples[key].append((clock() - t0) * 1000.0)
        if round_no + 1 >= min_rounds and clock() - start > budget_s:
            break
    return samples


def summary(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": int(a.size), "p50_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "mean_ms": float(a.mean()), "min_ms": float(a.min())}
