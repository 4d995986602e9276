"""Choosing the winner on evidence: speed first, but only where the difference is more than noise.

Each candidate's host median comes with a confidence interval from the interleaved samples (the
order statistics around the median: no distribution assumed). Candidates whose interval overlaps
the fastest one's, or that are within ``TIE`` of it, are tied; among tied candidates the more
accurate wins (a smaller accuracy drop with labels, else a higher worst-sample cosine), then the
smaller file. A 1.5% difference in median once chose ONNX int8 at cosine 0.969 over TFLite int8 at
0.991, and int8 at 97.6% over fp16 at 97.8% at the same estimated latency.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

TIE = 0.03  # within 3% of the fastest is a tie whatever the samples say


def median_ci(samples_ms: list[float], z: float = 1.96) -> tuple[float, float]:
    """A 95% confidence interval of the median: the order statistics n/2 -/+ z*sqrt(n)/2."""
    ordered = np.sort(np.asarray(samples_ms, dtype=np.float64))
    n = len(ordered)
    if n < 5:
        return float(ordered[0]), float(ordered[-1])
    half = z * math.sqrt(n) / 2
    lo, hi = max(0, int(math.floor(n / 2 - half))), min(n - 1, int(math.ceil(n / 2 + half)))
    return float(ordered[lo]), float(ordered[hi])


def _interval(o) -> tuple[float, float]:
    """The candidate's interval on the scale of its target estimate (host ms scaled alike)."""
    lo, hi = o.latency.get("p50_ci_ms") or (o.latency["p50_ms"], o.latency["p50_ms"])
    scale = o.target_ms / o.latency["p50_ms"] if o.latency.get("p50_ms") else 1.0
    return lo * scale, hi * scale


def inaccuracy(metrics: dict) -> tuple[float, float]:
    """Lower is more accurate: the accuracy drop in points (with labels), then 1 - worst cosine,
    rounded so that float noise between two exact variants is no difference."""
    return (round(max(metrics.get("accuracy_drop_points", 0.0), 0.0), 2),
            round(1.0 - metrics.get("cosine_min", 1.0), 4))


def pick(ready: list) -> tuple[Optional[object], list]:
    """(winner, the candidates it was tied with), from outcomes with ``target_ms``, ``latency``,
    ``metrics`` and ``size``."""
    if not ready:
        return None, []
    fastest = min(ready, key=lambda o: o.target_ms)
    _, fast_hi = _interval(fastest)
    tied = [o for o in ready
            if o.target_ms <= fastest.target_ms * (1 + TIE) or _interval(o)[0] <= fast_hi]
    winner = min(tied, key=lambda o: (inaccuracy(o.metrics), o.size or 0, o.target_ms))
    return winner, [o for o in tied if o is not winner]
