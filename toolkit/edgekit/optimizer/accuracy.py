"""The accuracy guard: compare a candidate's outputs with the fp32 reference."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from ..errors import EdgekitError
from ..metrics import cosine_rows, rows


@dataclass(frozen=True)
class Tolerance:
    min_cosine: float = 0.99  # mean cosine similarity per output row
    min_cosine_floor: Optional[float] = None  # minimum cosine over rows, when asked for
    min_top1: float = 0.99  # top-1 agreement with the reference (classifiers, no labels)
    max_accuracy_drop: float = 1.0  # points of the task metric (classifiers with labels)
    max_abs: Optional[float] = None  # largest absolute difference from fp32, when asked for (probabilities)
    # a detector's probability map is judged by what its post-processing keeps: the IoU of the
    # pixels above ``threshold`` (0.3 binarises a DBNet text map) against fp32's
    min_iou: Optional[float] = None
    threshold: float = 0.5
    # Each field of an output (a column of the last axis; a channel of axis 1) that varied in fp32
    # is judged on its own: RMS error over fp32's spread at most this, and not collapsed to a few
    # levels. One cosine over a detector's output is its boxes (0-320 px): scores rounded to one
    # value passed at 0.9999.
    max_slice_error: float = 0.8
    # A CTC recogniser (--task ctc) is judged by its greedy-decoded text: the character error rate
    # of the candidate's strings against fp32's, over all evaluation samples.
    max_cer: float = 0.01
    # A detector (--task detection) is judged by its decoded detections: mAP@0.5 of the candidate's
    # boxes with fp32's kept boxes (score >= 0.25 after NMS) as the ground truth.
    min_map: float = 0.95

    def __post_init__(self):
        for name in ("min_cosine", "min_top1"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1]")
        if self.max_accuracy_drop < 0:
            raise ValueError("max_accuracy_drop must be >= 0")

    @classmethod
    def parse(cls, text: Optional[str]) -> "Tolerance":
        """'0.98' (mean cosine) or 'cosine=0.98,min_cosine=0.95,top1=0.98,accuracy_drop=2'."""
        if not text:
            return cls()
        keys = {"cosine": "min_cosine", "min_cosine": "min_cosine_floor", "top1": "min_top1",
                "accuracy_drop": "max_accuracy_drop", "max_abs": "max_abs", "iou": "min_iou",
                "threshold": "threshold", "slice_error": "max_slice_error", "cer": "max_cer", "map": "min_map"}
        values = {}
        try:
            if "=" not in text:
                return cls(min_cosine=float(text))
            for part in text.split(","):
                key, _, value = part.partition("=")
                if key.strip() not in keys:
                    raise KeyError(key)
                values[keys[key.strip()]] = float(value)
            return cls(**values)
        except (ValueError, KeyError) as exc:
            raise EdgekitError(
                f"bad --tolerance {text!r} ({exc})",
                "use a mean cosine like 0.98, or cosine=0.98,min_cosine=0.95,top1=0.98,accuracy_drop=2,max_abs=0.02,"
                "iou=0.85,threshold=0.3,cer=0.01,map=0.95",
            ) from None

    def to_dict(self) -> dict:
        return asdict(self)


def compare(reference: list[np.ndarray], outputs: list[np.ndarray], labels: Optional[np.ndarray],
            task: str, threshold: Optional[float] = None) -> dict:
    """Metrics of ``outputs`` against ``reference`` (first axis: samples); with ``threshold``, also
    the IoU of the first output's values above it (a detector's kept pixels)."""
    metrics: dict = {}
    if threshold is not None and reference and np.all(np.isfinite(outputs[0])):
        ref_on, out_on = reference[0] > threshold, outputs[0] > threshold
        union = int((ref_on | out_on).sum())
        metrics["iou"] = float((ref_on & out_on).sum() / union) if union else 1.0
    worst_cos, worst_floor, max_abs, mean_abs = 1.0, 1.0, 0.0, 0.0
    for ref, out in zip(reference, outputs):
        r, o = rows(ref), rows(out)
        if r.shape != o.shape:
            raise EdgekitError(f"candidate output shape {o.shape} differs from the reference {r.shape}")
        if not np.all(np.isfinite(o)):
            return {"finite": False, "cosine_mean": 0.0, "cosine_min": 0.0, "max_abs_error": float("inf"),
                    "mean_abs_error": float("inf")}
        diff = np.abs(r - o)
        max_abs, mean_abs = max(max_abs, float(diff.max())), max(mean_abs, float(diff.mean()))
        # one number per sample (a speech probability): a row's cosine is only its sign, so the
        # samples together are the vector
        cos = cosine_rows(r.reshape(1, -1), o.reshape(1, -1)) if r.shape[1] == 1 else cosine_rows(r, o)
        worst_cos, worst_floor = min(worst_cos, float(cos.mean())), min(worst_floor, float(cos.min()))
    metrics.update(finite=True, cosine_mean=worst_cos, cosine_min=worst_floor, max_abs_error=max_abs,
                   mean_abs_error=mean_abs)
    metrics["worst_slice"] = worst_slice(reference, outputs)
    metrics["judged_by"] = JUDGED_BY.get(task.partition(":")[0], JUDGED_BY["generic"])
    if task.partition(":")[0] == "ctc":
        metrics.update(ctc_agreement(reference[0], outputs[0], task))
    if task == "detection":
        from .detection import detection_agreement

        metrics.update(detection_agreement(reference[0], outputs[0]))
    if task == "classification":
        ref_top, out_top = reference[0].argmax(-1), outputs[0].argmax(-1)
        metrics["top1_agreement"] = float((ref_top == out_top).mean())
        if labels is not None:
            metrics["accuracy"] = float((out_top == labels).mean())
            metrics["reference_accuracy"] = float((ref_top == labels).mean())
            metrics["accuracy_drop_points"] = 100 * (metrics["reference_accuracy"] - metrics["accuracy"])
    return metrics


TASKS = ("generic", "classification", "embedding", "ctc", "detection")
JUDGED_BY = {
    "generic": "cosine per row and each output field against fp32",
    "classification": "top-1 agreement with fp32 (accuracy with labels), cosine, each class score",
    "embedding": "cosine per row against fp32, each dimension",
    "ctc": "greedy CTC decode: character error rate against fp32's text, cosine, each class score",
    "detection": "decoded boxes (score >= 0.25, NMS at IoU 0.45): mAP@0.5 against fp32's boxes, each output field",
}


def check_task(task: str) -> str:
    """``generic``, ``classification``, ``embedding``, or ``ctc`` / ``ctc:BLANK`` (the blank class
    index, 0 by default)."""
    name, _, blank = task.partition(":")
    if name not in TASKS or (blank and (name != "ctc" or not blank.isdigit())):
        raise EdgekitError(f"unknown --task {task!r}", f"use one of {', '.join(TASKS)}; ctc:BLANK names the blank "
                           "class index (0 by default)")
    return task


def ctc_decode(logits: np.ndarray, blank: int = 0) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of [samples, time, classes] scores: best class per step, repeats
    merged, blanks dropped (what CRNN/PP-OCR recognisers ship with). Steps of all zeros are the
    padding that lines of different widths get when judged together (Dataset.grouped): skipped."""
    logits = np.asarray(logits)
    best = logits.argmax(-1).reshape(len(logits), -1)
    padding = ~logits.reshape(best.shape + (-1,)).any(-1)
    decoded = []
    for steps, pad in zip(best, padding):
        steps = steps[~pad]
        kept = steps[np.r_[True, steps[1:] != steps[:-1]]]
        decoded.append(tuple(int(k) for k in kept if k != blank))
    return decoded


def edit_distance(a: tuple, b: tuple) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def ctc_agreement(reference: np.ndarray, output: np.ndarray, task: str) -> dict:
    """Text agreement and character error rate of the candidate's decoded strings against fp32's."""
    if np.ndim(reference) != 3:
        raise EdgekitError(f"--task ctc needs a [samples, time, classes] output, got shape {np.shape(reference)}",
                           "put the recogniser's score output first, or use --task generic")
    blank = int(task.partition(":")[2] or 0)
    ref, out = ctc_decode(reference, blank), ctc_decode(output, blank)
    errors = sum(edit_distance(r, o) for r, o in zip(ref, out))
    return {"text_agreement": float(np.mean([r == o for r, o in zip(ref, out)])),
            "cer": errors / max(1, sum(len(r) for r in ref))}


def _slices(ref: np.ndarray, out: np.ndarray):
    """(axis, index, fp32 values, candidate values) for each slice that means something of its own:
    the fields of the last axis at rank 2 and 3 (a classifier's classes, a detector's box and score
    columns) and axis 1 from rank 3 (channels first: YOLOv8's [N, 84, anchors], a map's channels).
    Spatial axes of a map are not fields: an empty border column of a text-probability map holds
    noise near 0, which int8 rightly rounds away."""
    axes = ([ref.ndim - 1] if ref.ndim <= 3 else []) + ([1] if ref.ndim >= 3 else [])
    for axis in dict.fromkeys(axes):
        if ref.shape[axis] < 2:
            continue
        r = np.moveaxis(ref, axis, -1).reshape(-1, ref.shape[axis])
        o = np.moveaxis(out, axis, -1).reshape(-1, ref.shape[axis])
        for index in range(ref.shape[axis]):
            yield axis, index, r[:, index], o[:, index]


def worst_slice(reference: list[np.ndarray], outputs: list[np.ndarray]) -> Optional[dict]:
    """The slice that lost the most of what it carried in fp32: its RMS error over its fp32 spread
    (1.0 is as bad as a constant), and whether it collapsed to a few levels. Slices that barely
    vary in fp32 carry nothing and are not judged."""
    worst = None
    for n, (ref, out) in enumerate(zip(reference, outputs)):
        ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
        if ref.ndim < 2 or ref.shape != out.shape or len(ref) < 2:
            continue
        scale = float(np.abs(ref).max(initial=0.0)) or 1.0
        for axis, index, r, o in _slices(ref, out):
            spread = float(r.std())
            if len(r) < 8 or spread <= 1e-6 * scale:
                continue
            error = float(np.sqrt(np.mean((o - r) ** 2))) / spread
            levels, fp32_levels = len(np.unique(o)), len(np.unique(r))
            collapsed = levels <= 3 < fp32_levels // 4
            if worst is None or (collapsed, error) > (worst["collapsed"], worst["error"]):
                worst = {"output": n, "axis": axis, "index": index, "error": round(error, 4), "levels": levels,
                         "fp32_levels": fp32_levels, "collapsed": collapsed}
    return worst


def _slice_problem(metrics: dict, tolerance: Tolerance) -> Optional[str]:
    w = metrics.get("worst_slice")
    if not w:
        return None
    where = f"output {w['output']} slice {w['index']} of axis {w['axis']}"
    if w["collapsed"]:
        return f"{where} collapsed to {w['levels']} value(s) (fp32 has {w['fp32_levels']})"
    if w["error"] > tolerance.max_slice_error:
        return f"{where} lost its signal: error {w['error']:.2f} of its fp32 spread > {tolerance.max_slice_error}"
    return None


def verdict(metrics: dict, tolerance: Tolerance) -> tuple[bool, str]:
    """(passes, why not). With labels the task metric replaces top-1 agreement, as users judge
    a classifier by its accuracy; cosine of the outputs is required either way."""
    if not metrics.get("finite", True):
        return False, "non-finite outputs (NaN or inf)"
    problems = []
    if metrics["cosine_mean"] < tolerance.min_cosine:
        problems.append(f"mean cosine {metrics['cosine_mean']:.4f} < {tolerance.min_cosine}")
    if tolerance.min_iou is not None and metrics.get("iou", 0.0) < tolerance.min_iou:
        problems.append(f"IoU above {tolerance.threshold} {metrics.get('iou', 0.0):.4f} < {tolerance.min_iou}")
    if tolerance.max_abs is not None and metrics["max_abs_error"] > tolerance.max_abs:
        problems.append(f"max |diff| {metrics['max_abs_error']:.4g} > {tolerance.max_abs}")
    if tolerance.min_cosine_floor is not None and metrics["cosine_min"] < tolerance.min_cosine_floor:
        problems.append(f"min cosine {metrics['cosine_min']:.4f} < {tolerance.min_cosine_floor}")
    if "map50" in metrics and metrics["map50"] < tolerance.min_map:
        problems.append(f"decoded detections: mAP@0.5 {metrics['map50']:.4f} against fp32's boxes < {tolerance.min_map} "
                        f"({metrics['boxes_matched']} of {metrics['boxes_fp32']} boxes matched)")
    if "cer" in metrics and metrics["cer"] > tolerance.max_cer:
        problems.append(f"decoded text: character error rate {metrics['cer']:.4f} against fp32 > {tolerance.max_cer} "
                        f"({metrics['text_agreement']:.1%} of strings identical)")
    sliced = _slice_problem(metrics, tolerance)
    if sliced:
        problems.append(sliced)
    if "accuracy_drop_points" in metrics:
        if metrics["accuracy_drop_points"] > tolerance.max_accuracy_drop:
            problems.append(f"accuracy drop {metrics['accuracy_drop_points']:.2f} points > {tolerance.max_accuracy_drop}")
    elif "top1_agreement" in metrics and metrics["top1_agreement"] < tolerance.min_top1:
        problems.append(f"top-1 agreement {metrics['top1_agreement']:.4f} < {tolerance.min_top1}")
    return (not problems), "; ".join(problems)


def shortfall(metrics: dict, tolerance: Tolerance) -> float:
    """How far a candidate is from passing (0 when it passes): ranks the 'closest' candidate."""
    if not metrics.get("finite", True):
        return float("inf")
    gap = max(0.0, tolerance.min_cosine - metrics["cosine_mean"])
    if metrics.get("worst_slice"):
        gap += 1.0 if metrics["worst_slice"]["collapsed"] else \
            max(0.0, metrics["worst_slice"]["error"] - tolerance.max_slice_error)
    if tolerance.max_abs is not None:
        gap += max(0.0, metrics["max_abs_error"] - tolerance.max_abs)
    if tolerance.min_iou is not None:
        gap += max(0.0, tolerance.min_iou - metrics.get("iou", 0.0))
    if "cer" in metrics:
        gap += max(0.0, metrics["cer"] - tolerance.max_cer)
    if "map50" in metrics:
        gap += max(0.0, tolerance.min_map - metrics["map50"])
    if "accuracy_drop_points" in metrics:
        gap += max(0.0, metrics["accuracy_drop_points"] - tolerance.max_accuracy_drop) / 100
    elif "top1_agreement" in metrics:
        gap += max(0.0, tolerance.min_top1 - metrics["top1_agreement"])
    return gap
