"""TFLite: converted from PyTorch with litert-torch, quantised with ai-edge-quantizer, run by LiteRT
(ai-edge-litert, or tflite_runtime on older devices) with XNNPACK, or compiled for the Edge TPU."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from . import ArtifactFormat


class Tflite(ArtifactFormat):
    name = "tflite"
    suffix = ".tflite"
    runtime = "litert"
    runtime_modules = ("ai_edge_litert", "tflite_runtime")
    serves = ("litert-xnnpack", "litert-gpu", "edgetpu")
    precisions = ("fp32", "fp16", "int8-dynamic", "int8-static", "int8-weight-only")
    calibrated = frozenset({"int8-static"})
    sources = ("pytorch", "pt2", "tflite")
    needs = {"export": ("litert-torch", "tflite"), "quantize": ("ai-edge-quantizer", "tflite"),
             "run": ("ai-edge-litert", "litert")}

    def source_hint(self, model) -> str:
        return ("a PyTorch source is needed (a factory module:function or a .pt2): edgekit converts "
                "PyTorch to TFLite with litert-torch, not ONNX to TFLite")

    # -- sessions ---------------------------------------------------------------------------------
    def open_session(self, path, options, model=None):
        from ..backends.litert import LiteRTSession

        return LiteRTSession(path, options, model)

    def open_variant(self, path, variant, threads, specs):
        from types import SimpleNamespace

        from ..backends.base import SessionOptions
        from ..models.spec import TensorSpec

        inputs, outputs = ([TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in group] for group in specs)
        return self.open_session(path, SessionOptions(threads=threads), SimpleNamespace(inputs=inputs, outputs=outputs))

    # -- planning ---------------------------------------------------------------------------------
    def reason(self, precision, arch, profile, explicit):
        if precision == "fp16":
            if profile.cpu.fp16_arithmetic or "litert-gpu" in profile.runtimes:
                return True, "fp16 arithmetic on this target (XNNPACK fp16 / GPU delegate): up to 2x over fp32"
            return True, "no fp16 arithmetic here: fp16 only halves the file (computed as fp32)"
        if precision == "int8-weight-only":
            return True, "int8 weights, float compute: 4x smaller at fp32 accuracy"
        return super().reason(precision, arch, profile, explicit)

    def settings_label(self, candidate) -> str:
        return f"{len(candidate.tflite_exclude)} ops in float" if candidate.tflite_exclude else ""

    # -- building ---------------------------------------------------------------------------------
    def convert(self, model, dst: Path) -> dict:
        from ..convert.tflite_export import export_tflite

        return export_tflite(model, dst).to_dict()

    def build(self, builder, candidate, dst: Path) -> dict:
        from ..optimizer.build import guard

        base = self.base(builder)
        if candidate.precision == "fp32":
            shutil.copyfile(base, dst)
            return {}
        from ..quantize.tflite_quant import quantize_tflite

        return guard("ai-edge-quantizer", lambda: quantize_tflite(
            base, dst, candidate.precision, builder.calibration, candidate.tflite_exclude))

    def repairs(self, candidate, opt) -> Iterator:
        """The most sensitive ops kept in float, a few more at each try."""
        if not candidate.precision.startswith("int8-"):
            return
        from ..optimizer.repair import exclusion_steps
        from ..optimizer.sensitivity_tflite import op_sensitivity

        probe_path, _ = opt.builder.build(candidate)
        ranked = op_sensitivity(self.base(opt.builder), probe_path, opt.eval, opt.model)
        for k in exclusion_steps(ranked):
            kept = tuple(ranked[:k])
            yield (f"kept the {k} most sensitive op{'s' if k > 1 else ''} in float"), replace(
                candidate, tflite_exclude=tuple(re.escape(name) for name in kept))
