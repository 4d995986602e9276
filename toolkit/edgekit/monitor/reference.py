"""The reference a model's logged traffic is held to: what its inputs and outputs looked like on
data it was known to do well on.

Built once from reference data (a data set, or a past export of logged traffic with its outputs)
and stored in the collector database: feature histograms (the same features and buckets the
collector derives from each record), an expectation suite for raw logged inputs, bounds on the
summary features for devices that keep no inputs, the confidence calibration that estimates
accuracy without labels (confidence-based performance estimation, as NannyML's CBPE: on the
reference, accuracy per confidence bin), the reference accuracy, and the low-confidence line
(the reference's 5th percentile of confidence: 5% below it is normal, much more is not).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .._schema import Document, SchemaError, field, from_dict, to_dict
from ..errors import DataError, EdgekitError
from ..features import input_features, output_signals
from .sketch import Histogram, histograms

SCHEMA_VERSION = 1
CALIBRATION_BINS = 10
LOW_CONFIDENCE_QUANTILE = 0.05


class Calibration(Document):
    """Accuracy by confidence bin on the reference (equal-count bins; edges are upper bounds)."""

    edges: tuple[float, ...]
    accuracy: tuple[float, ...]
    counts: tuple[int, ...]

    def expected(self, confidence: np.ndarray) -> np.ndarray:
        """The calibrated probability of being right for each confidence."""
        which = np.clip(np.searchsorted(np.asarray(self.edges), confidence, side="left"), 0, len(self.accuracy) - 1)
        return np.asarray(self.accuracy)[which]


class Reference(Document):
    model: str
    created: float
    rows: int
    task: str  # classification | embedding | regression
    source: str
    histograms: dict[str, dict[str, int]]
    bounds: dict[str, tuple[float, float]]  # summary feature -> [low, high] for data quality
    suite: dict = field(default_factory=dict)  # an expectation suite over the model's raw inputs
    classes: int = 0
    accuracy: Optional[float] = None
    calibration: Optional[Calibration] = None
    low_confidence: Optional[float] = None
    schema_version: int = SCHEMA_VERSION

    def histogram(self, feature: str) -> Optional[Histogram]:
        data = self.histograms.get(feature)
        return None if data is None else Histogram.from_dict(feature, data)

    def to_json(self) -> str:
        return json.dumps(to_dict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "reference") -> "Reference":
        try:
            data = json.loads(text)
            if data.get("schema_version", 0) > SCHEMA_VERSION:
                raise EdgekitError(f"{where} uses schema {data['schema_version']}, newer than this edgekit",
                                   "upgrade edgekit")
            return from_dict(cls, data)
        except (ValueError, SchemaError, AttributeError) as exc:
            raise EdgekitError(f"{where} is not a valid monitoring reference: {exc}",
                               "rebuild it with: edgekit monitor reference") from None


def _predictor(ref: Optional[str]):
    if ref is None:
        return None
    from ..testing.models import Predictor

    return Predictor(ref)


def build_reference(data: str | Path, model: str, predictor: Optional[str] = None, chunk: int = 8192,
                    progress=None) -> Reference:
    """One pass over ``data``: outputs come from ``predictor`` (a bundle or model file) or, for a
    past export, from its ``outputs/<name>`` columns."""
    from ..tables import known_labels, model_columns, open_table

    table = open_table(data, chunk)
    run = _predictor(predictor)
    merged: dict[str, Histogram] = {}
    confidences, correct, labelled_conf, rows = [], [], [], 0
    width = 0
    inputs_seen: list[str] = []
    for part in table.chunks():
        columns = model_columns(part)
        labels = known_labels(part, str(data)) if columns.pop("labels", None) is not None else None
        inputs = {k: v for k, v in columns.items() if v.dtype.kind in "biuf"}
        if run is not None:
            inputs = run.feeds(inputs)
            outputs = {"output": run.outputs(inputs)}
        else:
            outputs = {k[len("outputs/"):]: v for k, v in part.items() if k.startswith("outputs/")}
            if not outputs:
                raise DataError(f"{data} holds no model outputs (outputs/<name>)",
                                "give the model with --predictor, or an 'edgekit collector export' with outputs")
        inputs_seen = list(inputs)
        feats = {}
        for name, values in inputs.items():
            feats.update({f"in.{k}": v for k, v in input_features(name, values).items()})
        signals = output_signals(outputs)
        feats.update({k: v for k, v in signals.items() if k.startswith("out.")})
        for name, hist in histograms(feats).items():
            target = merged.setdefault(name, Histogram(name))
            for bucket, count in hist.counts.items():
                target.add(bucket, count)
        first = next(iter(outputs.values()))
        width = int(np.prod(first.shape[1:])) if first.ndim > 1 else 1
        if "out.confidence" in signals:
            confidences.append(signals["out.confidence"])
            if labels is not None:  # only rows with a label calibrate (an export's feedback)
                truth, known = labels
                if known.any():
                    correct.append((signals["out.class"] == truth)[known])
                    labelled_conf.append(signals["out.confidence"][known])
        rows += len(next(iter(outputs.values())))
        if progress:
            progress(rows, table.rows)
    if not rows:
        raise DataError(f"{data} holds no rows", "give reference data the model did well on")
    # Labels make it a classifier; without them a short output vector is one, a long one an embedding.
    task = ("classification" if "out.class" in merged and (correct or width <= 100)
            else "embedding" if width >= 16 else "regression")
    calibration = accuracy = low = None
    if confidences:
        conf = np.concatenate(confidences)
        low = float(np.quantile(conf[np.isfinite(conf)], LOW_CONFIDENCE_QUANTILE))
        if correct:
            right = np.concatenate(correct).astype(np.float64)
            accuracy = float(right.mean())
            calibration = _calibrate(np.concatenate(labelled_conf), right)
    return Reference(model=model, created=time.time(), rows=rows, task=task, source=str(data),
                     histograms={k: h.to_dict() for k, h in sorted(merged.items())},
                     bounds=_bounds(merged), suite=_suite(data, inputs_seen),
                     classes=width if task == "classification" else 0, accuracy=accuracy,
                     calibration=calibration if task == "classification" else None,
                     low_confidence=low if task == "classification" else None)


def _calibrate(confidence: np.ndarray, right: np.ndarray) -> Calibration:
    ok = np.isfinite(confidence)
    conf, right = confidence[ok], right[ok]
    edges = np.unique(np.quantile(conf, np.linspace(0, 1, CALIBRATION_BINS + 1)[1:]))
    edges[-1] = 1.0 + 1e-9
    which = np.clip(np.searchsorted(edges, conf, side="left"), 0, len(edges) - 1)
    counts = np.bincount(which, minlength=len(edges))
    hits = np.bincount(which, weights=right, minlength=len(edges))
    # A bin with no reference rows borrows its neighbour's accuracy (never 0/0).
    acc = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    acc = np.where(np.isnan(acc), np.nanmean(acc), acc)
    return Calibration(tuple(float(e) for e in edges), tuple(float(a) for a in acc), tuple(int(c) for c in counts))


def _bounds(merged: dict[str, Histogram]) -> dict[str, tuple[float, float]]:
    """Bounds on input features for data quality over summaries: the reference's 0.1-99.9%
    range, widened by a tenth of its width; non-finite shares must stay at the reference's."""
    out = {}
    for name, hist in merged.items():
        if not name.startswith("in.") or hist.categorical:
            continue
        lo, hi = hist.quantile(0.001), hist.quantile(0.999)
        pad = 0.1 * (hi - lo) + 1e-6
        if name.endswith(".nonfinite"):
            out[name] = (0.0, hi + 1e-6)
        else:
            out[name] = (lo - pad, hi + pad)
    return out


def _suite(data, inputs: list[str]) -> dict:
    """The suggested suite, kept to the model's inputs (row counts and labels are not the
    traffic's business)."""
    from ..testing.expect import Suite
    from ..testing.suggest import suggest

    if not inputs:
        return {}
    suite = suggest(data)
    keep = tuple(c for c in suite.checks if getattr(c, "column", "") in inputs)
    return Suite(suite.name, keep).to_dict() if keep else {}


# -- storage in the collector database ------------------------------------------------------------

def save_reference(db, reference: Reference) -> None:
    with db.connect() as tx:
        tx.execute("DELETE FROM monitor_reference WHERE model = ?", (reference.model,))
        tx.execute("INSERT INTO monitor_reference (model, created, body) VALUES (?, ?, ?)",
                   (reference.model, reference.created, reference.to_json()))


def load_reference(db, model: str) -> Optional[Reference]:
    with db.connect() as tx:
        row = tx.one("SELECT body FROM monitor_reference WHERE model = ?", (model,))
    return None if row is None else Reference.from_json(row[0], f"the stored reference of {model}")
