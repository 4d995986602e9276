"""Numbers shared by the optimizer's accuracy guard, the device self-test, monitoring, the model
tests and the benchmarks.

numpy only: the on-device runtime uses it for its golden self-test.
"""

from __future__ import annotations

import numpy as np


def rows(a: np.ndarray) -> np.ndarray:
    """One float64 row per sample (the first axis); a 1-d array is one value per sample."""
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(len(a), -1) if a.ndim > 1 else a.reshape(-1, 1)


def cosine_rows(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Cosine similarity per sample; two all-zero rows agree (1.0)."""
    r, o = rows(reference), rows(output)
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1)
    return np.where(norms > 0, (r * o).sum(1) / np.maximum(norms, 1e-30), 1.0)


def max_relative_error(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """The largest absolute difference over all outputs, each relative to its reference's largest
    magnitude: how a converted or cleaned graph is held to its source (scale-free, so one bound
    serves logits and probabilities alike)."""
    return max(float(np.max(np.abs(np.asarray(o, np.float64) - r), initial=0.0))
               / max(float(np.max(np.abs(r), initial=0.0)), 1e-6) for r, o in zip(reference, outputs))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def probabilities(outputs: np.ndarray) -> np.ndarray:
    """Class probabilities from a classifier's output, whether logits or already probabilities."""
    outputs = outputs.astype(np.float64)
    if (outputs >= 0).all() and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3):
        return outputs
    return softmax(outputs)


def mcnemar_p(regressed: int, fixed: int) -> float:
    """One-sided exact McNemar test on paired predictions: the chance of at least ``regressed``
    rows that only the baseline got right, out of the ``regressed + fixed`` rows the two models
    disagree on, if neither model were better (a binomial test at one half). 1.0 when they never
    disagree. Small slices need it: one row of 22 is 4.5 points, and it is chance."""
    from math import comb

    n = regressed + fixed
    if n == 0:
        return 1.0
    return float(sum(comb(n, k) for k in range(regressed, n + 1)) / 2 ** n)
