"""Repairs for a candidate that fails the accuracy guard, in the order an engineer tries them:
per-channel weights, another calibration method, then keeping the most sensitive nodes in float."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Iterator

from .plan import Candidate

EXCLUDE_STEPS = (1, 2, 4, 8, 16)


def _steps(ranked: list) -> list[int]:
    """How many nodes to keep in float at each try: a few, never most of the model (that would
    just be the fp32 model under another name)."""
    cap = max(1, len(ranked) // 2)
    return [k for k in EXCLUDE_STEPS if k <= cap]


def repairs(candidate: Candidate, opt) -> Iterator[tuple[str, Candidate]]:
    if candidate.format == "onnx" and candidate.onnx_int8 is not None:
        yield from _onnx_int8(candidate, opt)
    elif candidate.format == "tflite" and candidate.precision.startswith("int8-"):
        yield from _tflite_int8(candidate, opt)


def _onnx_int8(candidate: Candidate, opt) -> Iterator[tuple[str, Candidate]]:
    settings = candidate.onnx_int8
    if not settings.per_channel:
        settings = replace(settings, per_channel=True)
        yield "per-channel weights", replace(candidate, onnx_int8=settings)
    if settings.mode == "static":
        for method in ("entropy", "percentile"):
            if method != settings.calibration:
                yield f"{method} calibration", replace(candidate, onnx_int8=replace(settings, calibration=method))
    # Sensitivity: measured once on the current settings, then the worst nodes stay in float.
    from .sensitivity import node_sensitivity

    probe = candidate.id + "-probe"
    base = replace(candidate, id=probe, onnx_int8=settings)
    path, _ = opt.builder.build(base)
    ranked = [name for name, _ in node_sensitivity(opt.builder.onnx_fp32(candidate.fused), path, opt.eval)]
    for k in _steps(ranked):
        kept = tuple(ranked[:k])
        yield (f"kept the {k} most sensitive node{'s' if k > 1 else ''} in float ({', '.join(kept[:4])}"
               f"{'...' if k > 4 else ''})"), replace(candidate, onnx_int8=replace(settings, exclude=kept))


def _tflite_int8(candidate: Candidate, opt) -> Iterator[tuple[str, Candidate]]:
    from .sensitivity_tflite import op_sensitivity

    probe_path, _ = opt.builder.build(candidate)
    ranked = op_sensitivity(opt.builder.tflite_fp32(), probe_path, opt.eval, opt.model)
    for k in _steps(ranked):
        kept = tuple(ranked[:k])

        yield (f"kept the {k} most sensitive op{'s' if k > 1 else ''} in float"), replace(
            candidate, tflite_exclude=tuple(re.escape(name) for name in kept))
