"""Plan the candidates for a target: formats, precisions and settings, each with its reason.

Everything device-specific comes from the profile (runtimes, precisions, ISA flags, constraints);
the presets below say why a setting suits a kind of CPU, as Optimum's AutoQuantizationConfig does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..devices.profile import Profile
from ..errors import EdgekitError
from ..models.spec import Model
from ..quantize.onnx_int8 import OnnxInt8Settings

FORMAT_OF_RUNTIME = {
    "litert-xnnpack": "tflite", "litert-gpu": "tflite", "edgetpu": "tflite",
    "onnxruntime-cpu": "onnx", "onnxruntime-cuda": "onnx", "onnxruntime-tensorrt": "onnx",
}
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static", "int8-weight-only")


@dataclass(frozen=True)
class Candidate:
    id: str
    format: str  # "onnx" or "tflite"
    precision: str  # one of PRECISIONS
    runtime: str  # the profile runtime it is meant for
    reason: str
    onnx_int8: Optional[OnnxInt8Settings] = None
    fused: bool = False  # built on onnxruntime's transformer-fused graph
    tflite_exclude: tuple[str, ...] = ()

    def settings_label(self) -> str:
        if self.onnx_int8:
            return self.onnx_int8.label()
        if self.fused:
            return "transformer fusions"
        if self.tflite_exclude:
            return f"{len(self.tflite_exclude)} ops in float"
        return ""

    def to_dict(self) -> dict:
        return {"id": self.id, "format": self.format, "precision": self.precision, "runtime": self.runtime,
                "reason": self.reason, "settings": self.settings_label(), "fused": self.fused,
                "onnx_int8": self.onnx_int8.to_dict() if self.onnx_int8 else None,
                "tflite_exclude": list(self.tflite_exclude)}


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


def int8_preset(profile: Profile, mode: str) -> tuple[OnnxInt8Settings, str]:
    """onnxruntime int8 settings for the target CPU or GPU, and why."""
    isa = set(profile.cpu.isa)
    gpu = any(r in profile.runtimes for r in ("onnxruntime-tensorrt", "onnxruntime-cuda"))
    if gpu:
        return (OnnxInt8Settings(mode=mode, activation_type="int8" if mode == "static" else "uint8"),
                "TensorRT takes symmetric S8S8 QDQ; per-channel weights")
    if profile.arch == "x86_64":
        if isa & {"avx512_vnni", "avx_vnni"}:
            return (OnnxInt8Settings(mode=mode, activation_type="int8" if mode == "static" else "uint8"),
                    "VNNI: S8S8 QDQ is onnxruntime's first recommendation; per-channel weights")
        return (OnnxInt8Settings(mode=mode, reduce_range=True),
                "AVX2 without VNNI: VPMADDUBSW can saturate, so U8S8 with reduce_range (onnxruntime docs)")
    return (OnnxInt8Settings(mode=mode),
            "ARM64: U8S8 is faster on lower-end ARM64 (Optimum's arm64 preset); per-channel weights")


def _formats(profile: Profile, model: Model, wanted: Optional[set[str]], plan: Plan) -> dict[str, str]:
    """format -> runtime, in the profile's order of preference."""
    formats: dict[str, str] = {}
    for runtime in profile.runtimes:
        formats.setdefault(FORMAT_OF_RUNTIME[runtime], runtime)
    if wanted:
        for fmt in list(formats):
            if fmt not in wanted:
                plan.skipped.append((f"{fmt} format", "not in --formats"))
                formats.pop(fmt)
        if not formats:
            raise EdgekitError(f"target {profile.id} runs none of the formats {', '.join(sorted(wanted))}",
                               f"its runtimes are {', '.join(profile.runtimes)}")
    can_tflite = model.is_torch or model.format == "tflite"
    can_onnx = model.is_torch or model.format == "onnx"
    if "tflite" in formats and not can_tflite:
        if len(formats) == 1:
            raise EdgekitError(
                f"target {profile.id} needs TFLite, and {model.source} is {model.format}",
                "a PyTorch source is needed (a factory module:function or a .pt2): edgekit converts "
                "PyTorch to TFLite with litert-torch, not ONNX to TFLite",
            )
        plan.skipped.append(("tflite format", f"the source is {model.format}; TFLite needs a PyTorch source"))
        formats.pop("tflite")
    if "onnx" in formats and not can_onnx:
        plan.skipped.append(("onnx format", f"the source is {model.format}; ONNX needs a PyTorch or ONNX source"))
        formats.pop("onnx")
    if not formats:
        raise EdgekitError(f"nothing in {profile.id}'s runtimes can be built from a {model.format} source",
                           "pass the PyTorch model")
    return formats


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
    isa = set(profile.cpu.isa)
    gpu_onnx = any(r in profile.runtimes for r in ("onnxruntime-cuda", "onnxruntime-tensorrt"))
    explicit = precisions or set()

    def add(fmt: str, precision: str, reason: str, **kw):
        cand_id = f"{fmt}-{precision}"
        plan.candidates.append(Candidate(cand_id, fmt, precision, fmt_runtime[fmt], reason, **kw))

    for precision in _expand(profile, arch):
        if precisions and precision not in precisions:
            plan.skipped.append((precision, "not in --precisions"))
            continue
        if full_int8 and precision != "int8-static":
            plan.skipped.append((precision, f"{profile.id} runs only full-integer int8 models"))
            continue
        for fmt in fmt_runtime:
            why = _reason(fmt, precision, arch, profile, isa, gpu_onnx, explicit)
            if why is None:
                continue
            ok, text = why
            if not ok:
                plan.skipped.append((f"{fmt} {precision}", text))
                continue
            kw = {}
            if fmt == "onnx" and precision.startswith("int8-") and precision != "int8-weight-only":
                settings, preset_why = int8_preset(profile, precision.split("-")[1])
                kw["onnx_int8"] = settings
                text = f"{text}; {preset_why}"
            # The fused graph uses com.microsoft ops: onnxruntime CPU/CUDA only, not TensorRT.
            if fmt == "onnx" and arch == "transformer" and fmt_runtime["onnx"] in ("onnxruntime-cpu", "onnxruntime-cuda"):
                kw["fused"] = True
            add(fmt, precision, text, **kw)
    if not plan.candidates:
        raise EdgekitError(f"no candidate fits target {profile.id} with these options",
                           "widen --formats/--precisions; see 'edgekit optimize --plan'")
    if full_int8:
        plan.notes.append(f"{profile.id} needs full-integer int8 with static shapes: only calibrated "
                          "int8 TFLite is built (compile it with edgetpu_compiler on x86-64 Debian)")
    return plan


def _reason(fmt, precision, arch, profile, isa, gpu_onnx, explicit):
    """(worth building?, why) for one format and precision; None when it does not apply at all."""
    cpu_fp16 = bool(isa & {"asimdhp", "avx512_fp16"})
    if precision == "fp32":
        return True, "fp32 reference conversion: the accuracy baseline and the safe fallback"
    if precision == "fp16":
        if fmt == "onnx":
            if gpu_onnx:
                return True, "fp16 ONNX for the CUDA/TensorRT providers (tensor cores)"
            return False, "onnxruntime's CPU provider lacks fp16 kernels for most ops"
        if cpu_fp16 or "litert-gpu" in profile.runtimes:
            return True, "fp16 arithmetic on this target (XNNPACK fp16 / GPU delegate): up to 2x over fp32"
        return True, "no fp16 arithmetic here: fp16 only halves the file (computed as fp32)"
    if precision == "int8-weight-only":
        if fmt == "onnx":
            return None  # onnxruntime has no int8 weight-only path for these ops; TFLite covers it
        return True, "int8 weights, float compute: 4x smaller at fp32 accuracy"
    if precision == "int8-dynamic":
        if fmt == "onnx" and "onnxruntime-tensorrt" in profile.runtimes and profile.runtimes[0] != "onnxruntime-cpu":
            return False, "TensorRT has no dynamic quantisation; static QDQ instead"
        if arch == "cnn" and "int8-dynamic" not in explicit and fmt == "onnx":
            return False, "static int8 suits CNNs (onnxruntime docs); dynamic ConvInteger is slow"
        gain = "dot-product int8" if isa & {"asimddp", "avx512_vnni", "avx_vnni"} else "int8 without dot-product (small gain)"
        return True, f"dynamic int8 (weights int8, activations quantised at run time): {gain}"
    if precision == "int8-static":
        if profile.constraints.full_int8_required:
            return True, "full-integer int8 (calibrated): the only thing this accelerator runs"
        if arch == "transformer" and "int8-static" not in explicit:
            return False, "static int8 of attention and LayerNorm loses accuracy; dynamic suits transformers"
        return True, "static int8 with calibration: integer activations too, fastest for CNNs"
    return None
