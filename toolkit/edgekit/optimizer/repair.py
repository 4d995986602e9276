"""Repairs for a candidate that fails the accuracy guard, in the order an engineer tries them.

Which repairs exist is the business of the format's recipe (``edgekit.optimizer.recipes``:
per-channel weights and other calibrations for ONNX int8, then the most sensitive nodes or ops
kept in float); this module holds what they share.
"""

from __future__ import annotations

from typing import Iterator

from . import recipes
from .plan import Candidate


def repairs(candidate: Candidate, opt) -> Iterator[tuple[str, Candidate]]:
    yield from recipes.get(candidate.format).repairs(candidate, opt)


def progressing(gaps: list[float], window: int = 3, least: float = 0.1) -> bool:
    """Whether repairs are still worth trying: the last ``window`` attempts together closed at
    least ``least`` of the gap to the tolerance that stood before them. A detector whose int8
    sits at cosine 0.85 does not reach 0.99 by keeping one more node in float, and each try costs
    a quantisation and an evaluation (minutes on a big model)."""
    if len(gaps) <= window:
        return True
    before, best = gaps[-window - 1], min(gaps[-window:])
    return before == float("inf") or before - best >= least * before
