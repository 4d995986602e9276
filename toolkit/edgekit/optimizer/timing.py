"""Latency of several sessions measured side by side (A B C A B C ...), medians per session.

Interleaving keeps a comparison valid while a shared machine's speed drifts. A session whose
threads spin after a run steals the cores of the next one for a moment: the optimizer, which times
candidates as the runtime runs them (spinning), gives each a burst of ~20 ms per turn, so that the
spin costs the next at most its first call.
"""

from __future__ import annotations

import itertools
import time
from typing import Callable

import numpy as np

from ..bench.stats import latency_stats as summary  # noqa: F401  (the optimizer reports the same statistics as bench)
from ..dataset import Dataset


def interleaved(runs: dict[str, Callable[[], object]], warmup: int = 5, min_rounds: int = 20,
                max_rounds: int = 200, budget_s: float = 20.0, clock=time.perf_counter,
                burst_ms: float = 0.0) -> dict[str, list[float]]:
    """Call every function once per round (or in bursts of about ``burst_ms``, so that models of
    tens of microseconds are timed warm), rotating the start; stop after ``min_rounds`` once
    ``budget_s`` is spent (or at ``max_rounds``). Returns milliseconds per call for each key."""
    keys = list(runs)
    bursts = {}
    for key in keys:
        t0 = clock()
        for _ in range(warmup):
            runs[key]()
        mean_ms = (clock() - t0) * 1000.0 / max(warmup, 1)
        bursts[key] = max(1, min(100, int(burst_ms / mean_ms))) if burst_ms and mean_ms > 0 else 1
    samples: dict[str, list[float]] = {k: [] for k in keys}
    start = clock()
    for round_no in range(max_rounds):
        offset = round_no % len(keys)
        for key in keys[offset:] + keys[:offset]:
            for _ in range(bursts[key]):
                t0 = clock()
                runs[key]()
                samples[key].append((clock() - t0) * 1000.0)
        if round_no + 1 >= min_rounds and clock() - start > budget_s:
            break
    return samples


def timed_samples(data: Dataset, count: int = 16) -> list[dict[str, np.ndarray]]:
    """What a candidate is timed on at batch 1: the first sample, or, where samples have their own
    lengths, ``count`` samples spread over the length distribution (its quantiles), so that a
    latency is that of the data's sentences and not of one of them."""
    if data.lengths is None:
        return [data.feeds(0, 1)]
    order = np.argsort(data.lengths, kind="stable")
    picks = order[np.unique(np.linspace(0, len(order) - 1, min(count, len(order))).round().astype(int))]
    return [data.feeds(int(i), int(i) + 1) for i in picks]


def cycle(calls: list[Callable[[], object]]) -> Callable[[], object]:
    """One call per invocation, each in turn."""
    if len(calls) == 1:
        return calls[0]
    turn = itertools.cycle(calls)
    return lambda: next(turn)()
