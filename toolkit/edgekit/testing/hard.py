"""Hard-case suites: the examples a model finds hardest, kept with their provenance, and the
regression test that holds every later candidate to them.

Three ways to find them: the highest loss; the largest loss increase between two versions of the
model (examples one version learned and the other forgot, as in forgetting events); and, for
PyTorch models, the largest input-gradient norm (where the answer turns most sharply).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .._io import atomic_write_bytes
from ..errors import EdgekitError
from ..metrics import probabilities
from .models import Predictor, cross_entropy
from ..tables import labels_of, load_columns


def _load(data: str | Path, predictor: Predictor, labels_column: Optional[str]) -> tuple[dict, np.ndarray]:
    columns = load_columns(data)
    return columns, labels_of(columns, labels_column, str(data))


def hard_cases(model: str, data: str | Path, top: int = 200, baseline: Optional[str] = None,
               labels: Optional[str] = None, out: Optional[str | Path] = None) -> dict:
    """Pick up to ``top`` examples by each criterion; save them (inputs, labels, provenance)."""
    predictor = Predictor(model)
    columns, y = _load(data, predictor, labels)
    feeds = predictor.feeds(columns)
    loss = cross_entropy(predictor.outputs(feeds), y)
    scores = {"highest loss": loss}
    if baseline is not None:
        base_loss = cross_entropy(Predictor(baseline).outputs(feeds), y)
        scores["largest loss increase over the baseline"] = loss - base_loss
    gradient = predictor.input_gradient_norm(feeds, y)
    if gradient is not None:
        scores["largest input-gradient norm"] = gradient
    chosen: dict[int, tuple[float, str]] = {}
    for why, score in scores.items():
        for index in np.argsort(-score)[:top]:
            if int(index) not in chosen:
                chosen[int(index)] = (float(score[index]), why)
    index = np.asarray(sorted(chosen), dtype=np.int64)
    suite = {name: columns[name][index] for name in predictor.input_names}
    suite.update(labels=y[index], source_index=index, score=np.asarray([chosen[i][0] for i in index]),
                 why=np.asarray([chosen[i][1] for i in index]),
                 source=np.asarray([str(data)] * len(index)), found_with=np.asarray([predictor.name] * len(index)))
    if out is not None:
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, **suite)
        atomic_write_bytes(out, buffer.getvalue())
    counts = {why: int((suite["why"] == why).sum()) for why in scores}
    return {"model": predictor.name, "data": str(data), "examples": len(index), "by_criterion": counts,
            "file": str(out) if out else None}


@dataclass
class RegressionResult:
    candidate: str
    baseline: str
    examples: int
    regressions: list[dict] = field(default_factory=list)  # baseline right, candidate wrong
    fixes: int = 0
    candidate_accuracy: float = 0.0
    baseline_accuracy: float = 0.0
    tolerance: int = 0

    @property
    def passed(self) -> bool:
        return len(self.regressions) <= self.tolerance

    def to_dict(self) -> dict:
        return {**self.__dict__, "passed": self.passed}


def regression(candidate: str, baseline: str, suite: str | Path, tolerance: int = 0) -> RegressionResult:
    """Per example of the suite: fail when the candidate gets wrong more than ``tolerance``
    examples that the baseline got right, and list them."""
    if tolerance < 0:
        raise EdgekitError("--tolerance is a number of examples, at least 0")
    cand, base = Predictor(candidate), Predictor(baseline)
    columns, y = _load(suite, cand, None)
    feeds = cand.feeds(columns)
    predicted = probabilities(cand.outputs(feeds)).argmax(1)
    right_c = predicted == y
    right_b = probabilities(base.outputs(feeds)).argmax(1) == y
    lost = np.flatnonzero(right_b & ~right_c)
    source = columns.get("source_index", np.arange(len(y)))
    why = columns.get("why", np.asarray([""] * len(y)))
    return RegressionResult(
        cand.name, base.name, len(y),
        regressions=[{"example": int(i), "source_index": int(source[i]), "label": int(y[i]),
                      "predicted": int(predicted[i]), "why": str(why[i])} for i in lost],
        fixes=int((~right_b & right_c).sum()), candidate_accuracy=float(right_c.mean()),
        baseline_accuracy=float(right_b.mean()), tolerance=tolerance)
