"""TFLite: converted from PyTorch with litert-torch or from ONNX (edgekit.convert.onnx_tflite),
quantised with ai-edge-quantizer or the TensorFlow Lite converter, checked for the Edge TPU."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from . import Recipe, exclusion_steps, guard
from ...errors import ConversionError

TF_INT8 = "TensorFlow Lite converter, full-integer (from onnx2tf's SavedModel)"


class TfliteRecipe(Recipe):
    format = "tflite"

    # -- planning ---------------------------------------------------------------------------------
    def reason(self, precision, arch, profile, explicit):
        if precision == "fp16":
            if "litert-gpu" in profile.runtimes:
                return True, "fp16 on the GPU delegate: up to 2x over fp32"
            return True, ("fp16 weights halve the file; XNNPACK unpacks them and computes in fp32 (fp16 compute "
                          "needs reduced-precision metadata the converters do not write)")
        if precision == "int8-weight-only":
            return True, "int8 weights, float compute: 4x smaller at fp32 accuracy"
        return super().reason(precision, arch, profile, explicit)

    def settings_label(self, candidate) -> str:
        if candidate.tflite_quantizer == "tf-converter":
            return "TensorFlow Lite converter int8"
        return f"{len(candidate.tflite_exclude)} ops in float" if candidate.tflite_exclude else ""

    # -- building ---------------------------------------------------------------------------------
    def convert(self, model, dst: Path, probe=None, timeout_s: float = 600.0, calibration=None) -> dict:
        if model.format == "onnx":
            from ...convert.onnx_tflite import export_tflite_from_onnx

            return export_tflite_from_onnx(model, dst, probe, timeout_s, calibration)
        from ...convert.tflite_export import export_tflite

        return export_tflite(model, dst, buckets=tuple(model.meta.get("sequence_buckets", ()))).to_dict()

    def convert_for(self, builder, dst: Path) -> dict:
        return self.convert(builder.model, dst, builder.probe, builder.seconds_left(), builder.calibration)

    def build(self, builder, candidate, dst: Path) -> dict:
        base = self.base(builder)
        if candidate.precision == "fp32":
            shutil.copyfile(base, dst)
            return {}
        from ...quantize.tflite_quant import quantize_tflite

        from ...convert.onnx_tflite import int8_path

        fallback = int8_path(base)
        if candidate.tflite_quantizer == "tf-converter":
            shutil.copyfile(fallback, dst)
            info = {"recipe": TF_INT8, "why": "the converter's own calibrated full-integer model"}
        else:
            try:
                info = guard("ai-edge-quantizer", lambda: quantize_tflite(
                    base, dst, candidate.precision, builder.calibration, candidate.tflite_exclude,
                    model=builder.model), builder)
            except ConversionError as exc:
                if candidate.precision != "int8-static" or candidate.tflite_exclude or not fallback.exists():
                    raise
                # the converter's own full-integer model, calibrated on the same data (onnx2tf's route)
                shutil.copyfile(fallback, dst)
                info = {"recipe": TF_INT8, "why": f"{exc} - so the converter's own calibrated int8 model is used"}
        if candidate.runtime == "edgetpu":  # what edgetpu_compiler would leave on the CPU
            from .edgetpu import partition

            info["edgetpu"] = partition(dst)
        return info

    def repairs(self, candidate, opt) -> Iterator:
        """The most sensitive ops kept in float, a few more at each try."""
        if not candidate.precision.startswith("int8-"):
            return
        from ...optimizer.sensitivity_tflite import op_sensitivity

        from ...convert.onnx_tflite import int8_path

        base = self.base(opt.builder)
        if candidate.precision == "int8-static" and candidate.tflite_quantizer != "tf-converter" \
                and int8_path(base).exists():
            yield "the TensorFlow Lite converter's full-integer model", replace(candidate, tflite_quantizer="tf-converter")
        if opt.model.meta.get("sequence_buckets"):
            return  # one signature per length: the op probe runs a file's one graph, not several
        probe_path, info = opt.builder.build(replace(candidate, tflite_quantizer="ai-edge-quantizer"))
        if info.get("recipe") == TF_INT8:
            return  # ai-edge-quantizer cannot quantise this graph: it has nothing to exclude ops from
        ranked = op_sensitivity(base, probe_path, opt.eval, opt.model)
        for k in exclusion_steps(ranked):
            kept = tuple(ranked[:k])
            yield (f"kept the {k} most sensitive op{'s' if k > 1 else ''} in float"), replace(
                candidate, tflite_exclude=tuple(re.escape(name) for name in kept))
