"""Has a feature's distribution moved away from the reference?

Evidently's defaults, chosen by the size of the reference as Evidently does
(``_get_default_stattest``): with up to 1,000 reference rows a statistical test at p < 0.05
(Kolmogorov-Smirnov for numbers, a two-sample chi-squared for categories and for numbers of at
most 5 values); with more, a distance with a threshold of 0.1 (Wasserstein distance in units of the
reference's standard deviation; Jensen-Shannon distance for categories and few values), because
on two large samples every test rejects and every feature "drifts" (evidently issue 50). A
test's power is bounded by the smaller sample, so a small reference against a window of 100k
rows stays a fair test; a distance against a small reference measures the reference's own
sampling noise: choosing by the window's size raised "dataset drift 0.55" on clean days with a
225-row reference.
Under ``MIN_ROWS`` nothing is judged: too few to say. PSI is reported alongside with its usual
bands (< 0.1 none, 0.1-0.25 moderate, > 0.25 major), over categories for features of few values
(deciles of a feature that is nearly always 0 are one bin, and PSI was blind to its moves).
A number judged by the KS test drifts only if it also moved by a practical amount, the same
Wasserstein distance a large reference is judged by (0.1 reference standard deviations): a pixel
minimum that moves from 0 to 0.0004 on a tenth of the rows is significant to a test against
100k rows and means nothing (the report showed it red beside a PSI of "none"). The statistics
are scipy's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from .sketch import Histogram

TEST_MAX_ROWS = 1000  # reference rows up to which a feature is judged by a test
FEW_VALUES = 5  # a number with at most this many values is judged as a category
P_VALUE = 0.05
DISTANCE_THRESHOLD = 0.1
MIN_ROWS = 30
MAX_EXPANDED = 20000  # a histogram expanded to values for the KS test keeps its shape at this size
DATASET_DRIFT_SHARE = 0.5


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    method: str  # ks | chi2 | wasserstein | jensenshannon | too few
    score: Optional[float]  # p-value for tests, distance otherwise
    threshold: float
    drifted: bool
    judged: bool
    rows: int
    reference_rows: int
    psi: Optional[float]
    reference_mean: Optional[float] = None
    current_mean: Optional[float] = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def psi_band(self) -> str:
        if self.psi is None:
            return "-"
        return "none" if self.psi < 0.1 else "moderate" if self.psi < 0.25 else "major"


def _expand(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    if total > MAX_EXPANDED:
        counts = np.round(counts * (MAX_EXPANDED / total)).astype(np.int64)
    return np.repeat(values, counts.astype(np.int64))


def psi(reference: Histogram, current: Histogram, bins: int = 10) -> Optional[float]:
    """Population stability index over the reference's deciles (or its categories)."""
    rv, rc = reference.arrays()
    cv, cc = current.arrays()
    if not len(rv) or not len(cv):
        return None
    if reference.categorical or len(np.union1d(rv, cv)) <= FEW_VALUES:
        r, c = _by_category(reference, current)
    else:
        cum = np.cumsum(rc) / rc.sum()
        edges = np.unique([rv[min(np.searchsorted(cum, q), len(rv) - 1)] for q in np.linspace(0, 1, bins + 1)[1:-1]])
        r = np.bincount(np.searchsorted(edges, rv, side="right"), weights=rc, minlength=len(edges) + 1)
        c = np.bincount(np.searchsorted(edges, cv, side="right"), weights=cc, minlength=len(edges) + 1)
    eps = 1e-4
    r = np.maximum(r / r.sum(), eps)
    c = np.maximum(c / c.sum(), eps)
    return float(((c - r) * np.log(c / r)).sum())


def class_shift(reference: Histogram, current: Histogram) -> tuple[Optional[float], Optional[float]]:
    """(total variation distance between the two class distributions, p-value of a two-sample
    chi-squared test): the reference is a sample too, so 225 reference rows against 100k current
    ones are not taken as exact shares (a goodness-of-fit test flags clean data at p = 1e-8)."""
    if not reference.total or not current.total:
        return None, None
    r, c = _by_category(reference, current)
    return float(0.5 * np.abs(r / r.sum() - c / c.sum()).sum()), _chi2_two_samples(r, c)


def _by_category(reference: Histogram, current: Histogram) -> tuple[np.ndarray, np.ndarray]:
    """Both histograms' counts over the values either holds, in one order."""
    rv, rc = reference.arrays()
    cv, cc = current.arrays()
    cats = np.union1d(rv, cv)
    return (np.asarray([rc[rv == v].sum() for v in cats], dtype=np.float64),
            np.asarray([cc[cv == v].sum() for v in cats], dtype=np.float64))


def _chi2_two_samples(r: np.ndarray, c: np.ndarray) -> float:
    """Two samples, two noises: a contingency test, not a fit to the reference's shares
    (Evidently's chisquare), which takes a 225-row reference as exact and, against a window of
    100k rows, rejects on the reference's own sampling noise. A category one side never saw gets
    half a row on both."""
    from scipy.special import chdtrc

    if len(r) <= 1:
        return 1.0
    # scipy's chi2_contingency (correction=False), without its per-call wrapper (half the time
    # of a week's drift series went to wrappers): Pearson's statistic, len(r) - 1 degrees of freedom
    table = np.stack([r, c]) + 0.5
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    return float(chdtrc(len(r) - 1, float(((table - expected) ** 2 / expected).sum())))


def feature_drift(reference: Histogram, current: Histogram, detail: bool = True) -> FeatureDrift:
    """Without ``detail`` (a series over time needs only whether it drifted) no PSI and no means,
    and no KS test where the distance already rules drift out (its p-value is then left None)."""
    from scipy import stats
    from scipy.spatial.distance import jensenshannon

    n_ref, n_cur = reference.total, current.total
    means = dict(reference_mean=_clean(reference.mean()), current_mean=_clean(current.mean())) if detail else {}
    if n_cur < MIN_ROWS or n_ref < MIN_ROWS:
        return FeatureDrift(reference.feature, "too few", None, 0.0, False, False, n_cur, n_ref, None, **means)
    stability = psi(reference, current) if detail else None
    rv, rc = reference.arrays()
    cv, cc = current.arrays()
    small_reference = n_ref <= TEST_MAX_ROWS
    if reference.categorical or len(np.union1d(rv, cv)) <= FEW_VALUES:
        r, c = _by_category(reference, current)
        if small_reference:
            p = _chi2_two_samples(r, c)
            return FeatureDrift(reference.feature, "chi2", p, P_VALUE, p < P_VALUE, True, n_cur, n_ref, stability,
                                **means)
        d = float(jensenshannon(r / r.sum(), c / c.sum()))
        return FeatureDrift(reference.feature, "jensenshannon", d, DISTANCE_THRESHOLD, d > DISTANCE_THRESHOLD, True,
                            n_cur, n_ref, stability, **means)
    if small_reference:
        moved = _wasserstein(rv, rc, cv, cc) > DISTANCE_THRESHOLD
        if not detail and not moved:
            return FeatureDrift(reference.feature, "ks", None, P_VALUE, False, True, n_cur, n_ref, None, **means)
        # scipy's ks_2samp itself, past its nan-and-axis wrapper (functools.wraps keeps it as
        # __wrapped__): two finite 1-D samples need none of it, and it doubled each call's time
        ks = getattr(stats.ks_2samp, "__wrapped__", stats.ks_2samp)
        p = float(ks(_expand(rv, rc), _expand(cv, cc)).pvalue)
        drifted = p < P_VALUE and moved
        return FeatureDrift(reference.feature, "ks", p, P_VALUE, drifted, True, n_cur, n_ref, stability, **means)
    d = _wasserstein(rv, rc, cv, cc)
    return FeatureDrift(reference.feature, "wasserstein", d, DISTANCE_THRESHOLD, d > DISTANCE_THRESHOLD, True, n_cur,
                        n_ref, stability, **means)


def _wasserstein(rv, rc, cv, cc) -> float:
    """Wasserstein distance in reference standard deviations."""
    from scipy import stats

    mean = (rv * rc).sum() / rc.sum()
    std = math.sqrt(max(((rv - mean) ** 2 * rc).sum() / rc.sum(), 0.0))
    # A feature constant on the reference (a pixel minimum that is always 0) is measured against a
    # small floor, so that any real movement counts and bucket rounding does not.
    scale = max(std, 0.02 * abs(mean), 1e-3)
    return float(stats.wasserstein_distance(rv, cv, rc, cc)) / scale


def _clean(x: float) -> Optional[float]:
    return x if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class DatasetDrift:
    features: tuple[FeatureDrift, ...]

    @property
    def judged(self) -> int:
        return sum(f.judged for f in self.features)

    @property
    def share(self) -> Optional[float]:
        return sum(f.drifted for f in self.features) / self.judged if self.judged else None

    @property
    def drifted(self) -> bool:
        return self.share is not None and self.share >= DATASET_DRIFT_SHARE

    def to_dict(self) -> dict:
        return {"share": self.share, "drifted": self.drifted, "judged": self.judged,
                "features": [f.to_dict() | {"psi_band": f.psi_band} for f in self.features]}


def dataset_drift(reference: dict[str, Histogram], current: dict[str, Histogram], features: list[str],
                  detail: bool = True) -> DatasetDrift:
    """Each of ``features`` present on both sides; the worst first (``detail``: feature_drift's)."""
    found = [feature_drift(reference[f], current[f], detail) for f in features if f in reference and f in current]
    return DatasetDrift(tuple(sorted(found, key=_severity)))


def _severity(f: FeatureDrift):
    if not f.judged:
        return (2, 0.0, f.feature)
    if f.method in ("ks", "chi2"):  # (a KS test left out where the distance ruled drift out: last)
        return (0 if f.drifted else 1, 1.0 if f.score is None else f.score, f.feature)
    return (0 if f.drifted else 1, -f.score, f.feature)
