"""Length buckets read off the data's length histogram (issue 30): where a server batches
sentences together, which lengths a TFLite file gets a signature for, and the lengths the
winner's latency is reported at."""

from __future__ import annotations

from typing import Optional

import numpy as np


def round_up(value: float, step: int) -> int:
    return int(-(-value // step) * step)


def batch_buckets(lengths: np.ndarray, most: Optional[int]) -> list[int]:
    """Edges of the buckets a server batches within: the lengths below which a quarter, half,
    three quarters and 90% of the samples lie, and the longest (rounded up to a multiple of 4, so
    that a batch pads a few tokens at most), then doubling up to ``most``."""
    edges = {round_up(np.quantile(lengths, q), 4) for q in (0.25, 0.5, 0.75, 0.9, 1.0)}
    top = max(edges)
    while most and top < most:
        top = min(top * 2, most)
        edges.add(top)
    return sorted(e for e in edges if e >= 1)


def signature_buckets(lengths: np.ndarray, most: int) -> list[int]:
    """The lengths a TFLite file gets a signature for: few, since each is a converted graph (about
    10 s for MiniLM), and each sentence pays for its bucket: the median, the 90th and the 99th
    percentile (rounded up to a multiple of 8) and ``most``, which every sentence fits after
    truncation. Without the 99th, MiniLM's sentences of 25-48 tokens ran at 128, 30 ms each."""
    edges = {min(round_up(np.quantile(lengths, q), 8), most) for q in (0.5, 0.9, 0.99)} | {most}
    return sorted(edges)


# where the report gives the winner's latency: half the data is no longer than the first, 90% and
# 99% than the next, and the last is the longest sample
LATENCY_AT = ((0.5, "median"), (0.9, "p90"), (0.99, "p99"), (1.0, "longest"))


def length_picks(lengths: np.ndarray) -> list[tuple[str, int, int]]:
    """(label, length, sample index) at each of LATENCY_AT's quantiles, one per distinct length."""
    order = np.argsort(lengths, kind="stable")
    picks, seen = [], set()
    for q, label in LATENCY_AT:
        index = int(order[int(round(q * (len(order) - 1)))])
        if int(lengths[index]) not in seen:
            seen.add(int(lengths[index]))
            picks.append((label, int(lengths[index]), index))
    return picks
