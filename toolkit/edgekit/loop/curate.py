"""Curation: which logged predictions are worth a label.

Strategies score every unlabelled row of a pool (the collector's export) in one streaming pass:
uncertainty (least confidence, margin, entropy) from the outputs the device logged, loss where a
label exists, disagreement with a second model, random as the control. Scores are combined by
weighted percentile rank, so no strategy's scale dominates. Pure uncertainty spends a budget on
near-duplicates (a stuck camera's frames all look uncertain the same way), so with ``diversity``
the budget is chosen by k-center greedy over the outputs of the top candidates (Sener & Savarese's
core set). Rows a user rule flags (``module:function``, e.g. "every prediction a user rejected")
are taken first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from ..errors import EdgekitError
from ..metrics import probabilities
from ..tables import OUTPUT_PREFIX, known_labels, model_columns, open_table, take_rows
from ..testing.expect import combined_row_hashes

if TYPE_CHECKING:  # config validates strategy names against STRATEGIES here: it imports this module
    from .config import Curation

STRATEGIES: dict[str, Callable] = {}


def strategy(name: str):
    """Register ``fn(probs, chunk, context) -> scores`` (higher: label it first; NaN: not applicable)."""
    def wrap(fn):
        STRATEGIES[name] = fn
        return fn
    return wrap


@strategy("least_confidence")
def _least_confidence(probs, chunk, ctx):
    return 1.0 - probs.max(1)


@strategy("margin")
def _margin(probs, chunk, ctx):
    top = np.sort(probs, 1)
    return 1.0 - (top[:, -1] - top[:, -2]) if probs.shape[1] > 1 else np.zeros(len(probs))


@strategy("entropy")
def _entropy(probs, chunk, ctx):
    return -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(1)


@strategy("loss")
def _loss(probs, chunk, ctx):
    """Cross-entropy against the users' labels (NaN without one): labels to review."""
    labels, known = ctx["labels"]
    out = np.full(len(probs), np.nan)
    ok = known & (labels >= 0) & (labels < probs.shape[1])
    out[ok] = -np.log(np.clip(probs[ok, labels[ok]], 1e-12, 1))
    return out


@strategy("disagreement")
def _disagreement(probs, chunk, ctx):
    """How far a second model's answer is from the logged one: top-1 disagreement first, then the
    total-variation distance between the two distributions."""
    other = probabilities(ctx["other"].outputs(model_columns(chunk)))
    if other.shape != probs.shape:
        raise EdgekitError(f"the second model's outputs {other.shape[1:]} do not match the logged {probs.shape[1:]}",
                           "curation.other must be a model of the same task and classes")
    differs = other.argmax(1) != probs.argmax(1)
    return differs + 0.5 * np.abs(other - probs).sum(1)


@strategy("novelty")
def _novelty(probs, chunk, ctx):
    """Distance from the nearest earlier training example, in a fixed random projection of the
    inputs: the drifted inputs a model is confidently wrong about, which uncertainty misses."""
    reference = ctx.get("reference")
    if reference is None:
        return np.full(len(probs), np.nan)
    points = project(model_columns(chunk), ctx["inputs"])
    nearest = np.full(len(points), np.inf)
    for start in range(0, len(reference), 1024):  # no rows x reference matrix larger than this
        block = reference[start:start + 1024]
        d = (points ** 2).sum(1)[:, None] - 2 * points @ block.T + (block ** 2).sum(1)[None, :]
        nearest = np.minimum(nearest, d.min(1))
    return np.sqrt(np.maximum(nearest, 0))


def project(columns: dict, inputs: list[str], dims: int = 64) -> np.ndarray:
    """Each row's inputs, flattened and projected to ``dims`` by a fixed Gaussian matrix
    (Johnson-Lindenstrauss: distances survive), so any tensor shape compares cheaply."""
    flat = np.concatenate([np.asarray(columns[n], np.float64).reshape(len(columns[n]), -1) for n in inputs], axis=1)
    matrix = np.random.default_rng(1234).normal(0, 1 / np.sqrt(dims), (flat.shape[1], dims))
    return np.nan_to_num(flat) @ matrix


def reference_points(paths: list, inputs: list[str], rows: int = 4000) -> Optional[np.ndarray]:
    """Projected inputs of up to ``rows`` earlier training examples (what novelty measures from)."""
    parts, held = [], 0
    for path in paths:
        for chunk in open_table(path).chunks():
            part = project(chunk, inputs)[:rows - held]
            parts.append(part)
            held += len(part)
            if held >= rows:
                return np.concatenate(parts)
    return np.concatenate(parts) if parts else None


@strategy("random")
def _random(probs, chunk, ctx):
    return ctx["rng"].random(len(probs))


@dataclass(frozen=True)
class Selection:
    rows: np.ndarray  # indices into the pool, best first
    scores: np.ndarray  # the combined score of each
    reasons: tuple[str, ...]  # "rule:<name>", or the strongest strategy
    pool: int  # rows scored
    labelled: int  # pool rows that already had a label (not queued)
    excluded: int  # rows queued by an earlier run

    def to_dict(self) -> dict:
        from collections import Counter

        return {"selected": int(len(self.rows)), "pool": self.pool, "already_labelled": self.labelled,
                "excluded": self.excluded, "reasons": dict(Counter(self.reasons))}


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Percentile rank in [0, 1]; NaN ranks 0."""
    out = np.zeros(len(scores))
    ok = ~np.isnan(scores)
    if ok.sum() > 1:
        order = scores[ok].argsort(kind="stable").argsort(kind="stable")
        out[ok] = order / (ok.sum() - 1)
    elif ok.any():
        out[ok] = 1.0
    return out


def k_center_greedy(points: np.ndarray, k: int, weights: Optional[np.ndarray] = None, first: int = 0) -> np.ndarray:
    """Indices of ``k`` points, each the farthest from those already picked (times its weight: the
    strategies' score, so that spreading out does not mean drifting to the points nobody needs
    labelled): a budget that covers the space instead of piling onto one dense corner. O(n k)
    distances, no n x n matrix."""
    k = min(k, len(points))
    weights = np.ones(len(points)) if weights is None else weights
    picked = [first]
    nearest = np.linalg.norm(points - points[first], axis=1)
    for _ in range(k - 1):
        nxt = int((nearest * weights).argmax())
        picked.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(points - points[nxt], axis=1))
    return np.asarray(picked)


def curate(pool: str, config: Curation, exclude: frozenset = frozenset(), other=None,
           reference: Optional[list] = None, progress: Optional[Callable[[int], None]] = None) -> Selection:
    """Score the pool's unlabelled rows and pick ``config.budget`` of them. ``exclude``: keys
    (device, request_id, row) already queued by earlier runs; ``reference``: files of earlier
    training data (novelty measures from them)."""
    from .._hooks import import_callable

    table = open_table(pool)
    inputs = sorted(c for c in model_columns({c: None for c in table.columns}) if c != "labels")
    if "novelty" in config.strategies and not reference:
        raise EdgekitError("the novelty strategy needs earlier training data",
                           "set base_data in loop.toml, or drop novelty from curation.strategies")
    ref_points = reference_points(reference, inputs) if reference and "novelty" in config.strategies else None
    rules = [(ref, import_callable(ref, "curation rule")) for ref in config.rules]
    rng = np.random.default_rng(config.seed)
    weights = {k: float(v) for k, v in config.strategies.items() if v > 0}
    scores: dict[str, list] = {name: [] for name in weights}
    flagged, eligible, digests = [], [], []
    reviewing = weights.get("loss", 0) > 0
    labelled = excluded = offset = 0
    for chunk in table.chunks():
        n = len(chunk["request_id"])
        out_name = next((k for k in chunk if k.startswith(OUTPUT_PREFIX)), None)
        if out_name is None:
            raise EdgekitError(f"{pool} has no logged outputs", "curate a collector export (edgekit collector export)")
        probs = probabilities(chunk[out_name].reshape(n, -1).astype(np.float64))
        labels, known = known_labels(chunk) if "labels" in chunk else (np.full(n, -1), np.zeros(n, bool))
        keys = list(zip(chunk["device"], chunk["request_id"], chunk["row"].astype(int)))
        done = np.array([k in exclude for k in keys], bool) if exclude else np.zeros(n, bool)
        ctx = {"labels": (labels, known), "rng": rng, "other": other, "reference": ref_points, "inputs": inputs}
        for name in weights:
            scores[name].append(np.asarray(STRATEGIES[name](probs, chunk, ctx), np.float64))
        flags = np.zeros(n, bool)
        for ref, rule in rules:
            try:
                flags |= np.asarray(rule(chunk), bool).reshape(n)
            except Exception as exc:
                raise EdgekitError(f"curation rule {ref} failed: {type(exc).__name__}: {exc}",
                                   "a rule takes the pool's columns (a dict of arrays) and returns one bool per row"
                                   ) from None
        flagged.append(flags)
        # With the loss strategy, labelled rows come back for review: a label the model finds
        # very surprising is often a wrong one (or a hard case worth a second look).
        eligible.append((~known | reviewing) & ~done)
        digests.append(combined_row_hashes(chunk, inputs))
        labelled += int(known.sum())
        excluded += int((done & ~known).sum())
        offset += n
        if progress:
            progress(offset)
    if offset == 0:
        raise EdgekitError(f"the pool {pool} is empty", "widen curation.window, or check the devices' sampling")
    ok = np.concatenate(eligible)
    digest = np.concatenate(digests)
    flags = np.concatenate(flagged) & ok
    combined = np.zeros(offset)
    parts = {name: _ranks(np.concatenate(s)) for name, s in scores.items()}
    for name, rank in parts.items():
        combined += weights[name] * rank
    combined[~ok] = -np.inf
    budget = min(config.budget, int(ok.sum()))
    chosen = list(np.flatnonzero(flags)[np.argsort(-combined[flags], kind="stable")][:budget])
    rest = budget - len(chosen)
    if rest > 0:
        candidates = np.flatnonzero(ok & ~flags)
        candidates = candidates[np.argsort(-combined[candidates], kind="stable")]
        # The same input twice is one label's worth: keep the best-scored copy of each.
        seen = set(digest[chosen].tolist())
        _, first = np.unique(digest[candidates], return_index=True)
        candidates = np.asarray([c for c in candidates[np.sort(first)] if digest[c] not in seen], dtype=np.int64)
        if config.diversity and len(candidates) > rest:
            top = candidates[:rest * max(1, config.oversample)]
            # diversity is measured between inputs: two frames of a stuck camera are one point
            points = project(take_rows(pool, top), inputs)
            weight = combined[top] - combined[top].min()
            weight = weight / weight.max() if weight.max() > 0 else np.ones(len(top))
            chosen += list(top[k_center_greedy(points, rest, 0.1 + weight)])
        else:
            chosen += list(candidates[:rest])
    rows = np.asarray(chosen, dtype=np.int64)
    reasons = []
    for r in rows:
        if flags[r]:
            reasons.append("rule")
        else:
            reasons.append(max(parts, key=lambda name: weights[name] * parts[name][r]) if parts else "rule")
    return Selection(rows, combined[rows], tuple(reasons), offset, labelled, excluded)
