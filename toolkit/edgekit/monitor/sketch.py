"""Mergeable histograms of features: the collector's memory of a distribution.

Numeric values fall into logarithmic buckets (DDSketch's mapping: every value is known to within
2% of itself, over any range, with no bounds fixed in advance), categorical values into one bucket
per category. Counts from any devices, hours or versions add up, so a window's distribution is a
SQL SUM over the stored counts, never a pass over the raw log, and a reference registered after
the data arrived compares with it all the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..features import CATEGORICAL, NEAR_ONE

GAMMA = 1.04  # bucket width: values are kept to within (GAMMA - 1) / (GAMMA + 1) = 2% of themselves
_LOG_GAMMA = math.log(GAMMA)
TINY = 1e-4  # |value| below this is bucket 0 (pixel means, projections and shares near zero)
_OFFSET = math.ceil(math.log(TINY) / _LOG_GAMMA)


def buckets(values: np.ndarray) -> np.ndarray:
    """Bucket index of each finite value: 0 for |v| < TINY, +-k above (sign kept)."""
    v = np.asarray(values, dtype=np.float64)
    mag = np.abs(v)
    with np.errstate(divide="ignore"):
        k = np.ceil(np.log(np.maximum(mag, TINY)) / _LOG_GAMMA) - _OFFSET + 1
    k = np.where(mag < TINY, 0, k)
    return (np.sign(v) * k).astype(np.int64)


def representative(index: np.ndarray) -> np.ndarray:
    """The value a bucket stands for (DDSketch's midpoint, within 2% of every value in it)."""
    i = np.asarray(index, dtype=np.float64)
    k = np.abs(i) + _OFFSET - 1
    upper = np.exp(k * _LOG_GAMMA)
    mid = 2 * upper / (GAMMA + 1)
    return np.where(i == 0, 0.0, np.sign(i) * mid)


def is_categorical(feature: str) -> bool:
    return feature in CATEGORICAL


def bucket_of(feature: str, values: np.ndarray) -> np.ndarray:
    """Categories as themselves; numbers in log buckets. Probabilities that crowd near 1 (a
    confident model's top-1) are bucketed by their distance from 1, which keeps 0.9990 and
    0.9999 apart: on the value itself both would be 'about 0.98'."""
    if is_categorical(feature):
        return np.asarray(values, dtype=np.int64)
    if feature in NEAR_ONE:
        return buckets(1.0 - np.asarray(values, dtype=np.float64))
    return buckets(values)


def value_of(feature: str, index: np.ndarray) -> np.ndarray:
    """The inverse of bucket_of: the value each bucket stands for."""
    if is_categorical(feature):
        return np.asarray(index, dtype=np.float64)
    if feature in NEAR_ONE:
        return 1.0 - representative(index)
    return representative(index)


@dataclass
class Histogram:
    """One feature's counts by bucket."""

    feature: str
    counts: dict[int, int] = field(default_factory=dict)
    # arrays() once per change: a week's series judges drift against the same reference
    # histograms hundreds of times (read-only, so no caller can change them under another)
    _arrays: Optional[tuple] = field(default=None, init=False, repr=False, compare=False)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def categorical(self) -> bool:
        return is_categorical(self.feature)

    def add(self, bucket: int, count: int) -> None:
        self._arrays = None
        self.counts[int(bucket)] = self.counts.get(int(bucket), 0) + int(count)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, counts) sorted by value: bucket representatives, or the categories themselves."""
        if self._arrays is None:
            keys = np.asarray(sorted(self.counts), dtype=np.int64)
            values = value_of(self.feature, keys)
            order = np.argsort(values, kind="stable")
            pair = (values[order], np.asarray([self.counts[int(k)] for k in keys], dtype=np.float64)[order])
            for a in pair:
                a.setflags(write=False)
            self._arrays = pair
        return self._arrays

    def quantile(self, q: float) -> float:
        values, counts = self.arrays()
        if not len(values):
            return math.nan
        cum = np.cumsum(counts)
        return float(values[min(int(np.searchsorted(cum, q * cum[-1], side="left")), len(values) - 1)])

    def mean(self) -> float:
        values, counts = self.arrays()
        return float((values * counts).sum() / counts.sum()) if len(values) else math.nan

    def share_outside(self, low: float, high: float) -> float:
        values, counts = self.arrays()
        if not len(values):
            return 0.0
        return float(counts[(values < low) | (values > high)].sum() / counts.sum())

    def to_dict(self) -> dict:
        return {str(k): v for k, v in sorted(self.counts.items())}

    @classmethod
    def from_dict(cls, feature: str, data: dict) -> "Histogram":
        return cls(feature, {int(k): int(v) for k, v in data.items()})


def histograms(features: dict[str, np.ndarray]) -> dict[str, Histogram]:
    """Histograms of per-row feature arrays (NaN and other non-finite values left out)."""
    out = {}
    for name, values in features.items():
        v = np.asarray(values)
        if v.dtype.kind not in "biuf":
            continue
        v = v[np.isfinite(v)] if v.dtype.kind == "f" else v
        keys, counts = np.unique(bucket_of(name, v), return_counts=True)
        out[name] = Histogram(name, {int(k): int(c) for k, c in zip(keys, counts)})
    return out
