"""Plan the candidates for a target: formats, precisions and settings, each with its reason.

Everything device-specific comes from the profile (runtimes, precisions, capabilities,
constraints); what each format is from ``edgekit.formats``, and why a precision suits a target
from its recipe (``edgekit.optimizer.recipes``), as Optimum's AutoQuantizationConfig presets do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .. import formats as registry
from ..devices.profile import PRECISIONS, Profile
from ..errors import EdgekitError
from ..spec import Model
from . import recipes

__all__ = ["PRECISIONS", "Candidate", "Plan", "architecture", "make_plan"]


@dataclass(frozen=True)
class Candidate:
    id: str
    format: str  # "onnx" or "tflite"
    precision: str  # one of PRECISIONS
    runtime: str  # the profile runtime it is meant for
    reason: str
    onnx_int8: Optional["OnnxInt8Settings"] = None  # noqa: F821  (quantize.onnx_int8, imported late)
    fused: bool = False  # built on onnxruntime's transformer-fused graph
    tflite_exclude: tuple[str, ...] = ()
    # full-integer TFLite from an ONNX source: ai-edge-quantizer on the fp32 TFLite, or the
    # TensorFlow Lite converter on onnx2tf's SavedModel ("tf-converter")
    tflite_quantizer: str = "ai-edge-quantizer"

    def settings_label(self) -> str:
        return recipes.get(self.format).settings_label(self)

    def to_dict(self) -> dict:
        return {"id": self.id, "format": self.format, "precision": self.precision, "runtime": self.runtime,
                "reason": self.reason, "settings": self.settings_label(), "fused": self.fused,
                "onnx_int8": self.onnx_int8.to_dict() if self.onnx_int8 else None,
                "tflite_exclude": list(self.tflite_exclude), "tflite_quantizer": self.tflite_quantizer}


@dataclass
class Plan:
    target: str
    architecture: str
    candidates: list[Candidate]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"target": self.target, "architecture": self.architecture,
                "candidates": [c.to_dict() for c in self.candidates],
                "skipped": [{"what": w, "why": y} for w, y in self.skipped], "notes": self.notes}


def architecture(model: Model) -> str:
    """'cnn', 'transformer' or 'mlp': decides dynamic versus static int8."""
    if model.is_torch:
        kinds = {type(m).__name__ for m in model.module.modules()}
        if any(k.startswith("Conv") for k in kinds):
            return "cnn"
        if kinds & {"LayerNorm", "MultiheadAttention", "Embedding"}:
            return "transformer"
        return "mlp"
    proto = model.meta.get("proto")
    if proto is not None:
        ops = {n.op_type for n in proto.graph.node}
        if "Conv" in ops:
            return "cnn"
        if "Softmax" in ops and ("LayerNormalization" in ops or "Gather" in ops):
            return "transformer"
    return "mlp"


def _formats(profile: Profile, model: Model, wanted: Optional[set[str]], plan: Plan) -> dict[str, str]:
    """format -> runtime, in the profile's order of preference."""
    chosen: dict[str, str] = {}
    for runtime in profile.runtimes:
        chosen.setdefault(registry.for_runtime(runtime).name, runtime)
    if wanted:
        for fmt in list(chosen):
            if fmt not in wanted:
                plan.skipped.append((f"{fmt} format", "not in --formats"))
                chosen.pop(fmt)
        if not chosen:
            raise EdgekitError(f"target {profile.id} runs none of the formats {', '.join(sorted(wanted))}",
                               f"its runtimes are {', '.join(profile.runtimes)}")
    for fmt in list(chosen):
        spec = registry.get(fmt)
        if spec.can_build_from(model):
            continue
        if len(chosen) == 1:
            raise EdgekitError(f"target {profile.id} needs {fmt}, and {model.source} is {model.format}",
                               spec.source_hint(model))
        plan.skipped.append((f"{fmt} format", f"the source is {model.format}; {spec.source_hint(model)}"))
        chosen.pop(fmt)
    return chosen


def _expand(profile: Profile, arch: str) -> list[str]:
    """Profile precisions (e.g. 'int8') -> concrete precisions, in order of preference."""
    order: list[str] = []
    for p in profile.precisions:
        if p == "int8":
            order += ["int8-dynamic", "int8-static", "int8-weight-only"]
        else:
            order.append(p)
    if "fp32" not in order and not profile.constraints.full_int8_required:
        order.append("fp32")
    return list(dict.fromkeys(order))


def make_plan(model: Model, profile: Profile, formats: Optional[set[str]] = None,
              precisions: Optional[set[str]] = None) -> Plan:
    arch = architecture(model)
    plan = Plan(target=profile.id, architecture=arch, candidates=[])
    fmt_runtime = _formats(profile, model, formats, plan)
    if precisions:
        unknown = precisions - set(PRECISIONS)
        if unknown:
            raise EdgekitError(f"unknown precision {', '.join(sorted(unknown))}", f"use {', '.join(PRECISIONS)}")
    full_int8 = profile.constraints.full_int8_required
    explicit = precisions or set()
    for precision in _expand(profile, arch):
        if precisions and precision not in precisions:
            plan.skipped.append((precision, "not in --precisions"))
            continue
        if full_int8 and precision != "int8-static":
            plan.skipped.append((precision, f"{profile.id} runs only full-integer int8 models"))
            continue
        for fmt, runtime in fmt_runtime.items():
            recipe = recipes.get(fmt)
            why = recipe.reason(precision, arch, profile, explicit)
            if why is None:
                continue
            ok, text = why
            if not ok:
                plan.skipped.append((f"{fmt} {precision}", text))
                continue
            fields, preset_why = recipe.settings(precision, arch, profile, runtime)
            plan.candidates.append(Candidate(f"{fmt}-{precision}", fmt, precision, runtime,
                                             f"{text}; {preset_why}" if preset_why else text, **fields))
    if not plan.candidates:
        raise EdgekitError(f"no candidate fits target {profile.id} with these options",
                           "widen --formats/--precisions; see 'edgekit optimize --plan'")
    if full_int8:
        plan.notes.append(f"{profile.id} needs full-integer int8 with static shapes: only calibrated "
                          "int8 TFLite is built (compile it with edgetpu_compiler on x86-64 Debian)")
    return plan
