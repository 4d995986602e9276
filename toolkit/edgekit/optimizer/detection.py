"""A detector judged as its users judge it: decoded boxes after NMS, matched against fp32's.

The output is YOLO's raw head, one row per anchor: ``[samples, anchors, 4 + classes]`` (x, y, w, h
box centre and size, then a score per class), or YOLOv8's channels-first ``[samples, 4 + classes,
anchors]`` (told apart by which axis is the longer: anchors outnumber classes). fp32's boxes with a
score of at least ``CONF`` after per-class NMS are the ground truth; the candidate's boxes, decoded
with a lower threshold so that a score moving across 0.25 is ranked rather than lost, are scored
by mAP@0.5 (all-point interpolated AP per class, averaged over the classes fp32 found). A
candidate whose scores all rounded to 0 finds nothing (mAP 0), one whose boxes moved by half
their size matches nothing, though both keep a whole-output cosine of 0.99.
"""

from __future__ import annotations

import numpy as np

from ..errors import EdgekitError

CONF = 0.25  # fp32's kept boxes (YOLO's predict default)
CANDIDATE_CONF = 0.05
NMS_IOU = 0.45
MATCH_IOU = 0.5
MAX_BOXES = 300


def _rows(output: np.ndarray) -> np.ndarray:
    a = np.asarray(output, dtype=np.float64)
    if a.ndim != 3 or min(a.shape[1:]) < 5:
        raise EdgekitError(f"--task detection needs a [samples, anchors, 4 + classes] output, got shape {a.shape}",
                           "put the detector's raw head output first, or use --task generic")
    return np.swapaxes(a, 1, 2) if a.shape[1] < a.shape[2] else a


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with many."""
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def decode(rows: np.ndarray, conf: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per sample: (xyxy boxes, scores, classes) kept after per-class greedy NMS, best first."""
    out = []
    for sample in rows:
        scores = sample[:, 4:].max(axis=1)
        keep = np.flatnonzero(scores >= conf)
        keep = keep[np.argsort(-scores[keep], kind="stable")][:30 * MAX_BOXES]
        xywh, classes = sample[keep, :4], sample[keep, 4:].argmax(axis=1)
        boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
        chosen: list[int] = []
        suppressed = np.zeros(len(keep), bool)
        for i in range(len(keep)):
            if suppressed[i]:
                continue
            chosen.append(i)
            if len(chosen) == MAX_BOXES:
                break
            same = classes == classes[i]
            suppressed |= same & (_iou(boxes[i], boxes) > NMS_IOU)
        chosen_ = np.asarray(chosen, dtype=np.int64)
        out.append((boxes[chosen_], scores[keep][chosen_], classes[chosen_]))
    return out


def _average_precision(hits: np.ndarray, scores: np.ndarray, positives: int) -> float:
    if positives == 0:
        return 1.0 if not len(hits) else 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    recall = np.r_[0.0, tp / positives, 1.0]
    precision = np.r_[1.0, tp / np.arange(1, len(tp) + 1), 0.0]
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def detection_agreement(reference: np.ndarray, output: np.ndarray) -> dict:
    truth, found = decode(_rows(reference), CONF), decode(_rows(output), CANDIDATE_CONF)
    per_class: dict[int, list] = {}
    positives: dict[int, int] = {}
    matched = total = 0
    ious = []
    for (t_boxes, _, t_classes), (boxes, scores, classes) in zip(truth, found):
        total += len(t_boxes)
        for c in t_classes.tolist():
            positives[c] = positives.get(c, 0) + 1
        used = np.zeros(len(t_boxes), bool)
        for i in range(len(boxes)):  # best score first (decode's order)
            candidates = np.flatnonzero((t_classes == classes[i]) & ~used)
            hit = False
            if len(candidates):
                overlap = _iou(boxes[i], t_boxes[candidates])
                best = int(overlap.argmax())
                if overlap[best] >= MATCH_IOU:
                    used[candidates[best]] = hit = True
                    if scores[i] >= CONF:
                        matched += 1
                        ious.append(float(overlap[best]))
            per_class.setdefault(int(classes[i]), []).append((hit, scores[i]))
    aps = []
    for c, count in positives.items():
        found_c = per_class.get(c, [])
        hits = np.asarray([h for h, _ in found_c], dtype=np.float64)
        aps.append(_average_precision(hits, np.asarray([s for _, s in found_c]), count))
    if not aps:  # fp32 kept no box: so must the candidate
        aps = [0.0 if any((s >= CONF).any() for _, s, _ in found) else 1.0]
    return {"map50": float(np.mean(aps)), "boxes_fp32": total, "boxes_matched": matched,
            "matched_iou_mean": float(np.mean(ious)) if ious else None}
