"""Produce a candidate's artifact with the real converters; intermediate files are shared."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from ..convert.onnx_export import ConversionError, export_onnx
from ..data import Dataset
from ..models.spec import Model
from .plan import Candidate


class Builder:
    """Builds candidates into ``workdir``; the fp32 exports are made once and reused."""

    def __init__(self, model: Model, workdir: Path, calibration: Optional[Dataset]):
        self.model, self.workdir, self.calibration = model, workdir, calibration
        self._base: dict[str, tuple[Optional[Path], Optional[ConversionError], dict]] = {}
        self.exports: dict[str, dict] = {}  # what each base conversion did, for the report

    def _cached(self, key: str, make) -> Path:
        if key not in self._base:
            try:
                path, info = make()
                self._base[key] = (path, None, info)
            except ConversionError as exc:
                self._base[key] = (None, exc, {})
            self.exports[key] = self._base[key][2] or {"error": str(self._base[key][1])}
        path, error, _ = self._base[key]
        if error is not None:
            raise error
        return path

    def onnx_fp32(self, fused: bool = False) -> Path:
        def export():
            dst = self.workdir / "base-fp32.onnx"
            if self.model.format == "onnx":
                shutil.copyfile(self.model.path, dst)
                return dst, {"exporter": "source file"}
            result = export_onnx(self.model, dst)
            return dst, result.to_dict()

        base = self._cached("onnx", export)
        if not fused:
            return base

        def fuse():
            from ..convert.onnx_optimize import optimize_transformer

            dst = self.workdir / "base-fp32-fused.onnx"
            try:
                return dst, {"fusions": optimize_transformer(base, dst)}
            except Exception as exc:  # the optimiser's failures are reported, not fatal
                raise ConversionError(f"onnxruntime transformer optimiser failed: {exc}", "onnxruntime.transformers") from None

        return self._cached("onnx-fused", fuse)

    def tflite_fp32(self) -> Path:
        def export():
            from ..convert.tflite_export import export_tflite

            dst = self.workdir / "base-fp32.tflite"
            if self.model.format == "tflite":
                shutil.copyfile(self.model.path, dst)
                return dst, {"exporter": "source file"}
            return dst, export_tflite(self.model, dst).to_dict()

        return self._cached("tflite", export)

    def build(self, candidate: Candidate) -> tuple[Path, dict]:
        dst = self.workdir / f"{candidate.id}{'.onnx' if candidate.format == 'onnx' else '.tflite'}"
        if candidate.format == "onnx":
            return dst, self._build_onnx(candidate, dst)
        return dst, self._build_tflite(candidate, dst)

    def _build_onnx(self, candidate: Candidate, dst: Path) -> dict:
        precision = candidate.precision
        if precision == "fp32":
            shutil.copyfile(self.onnx_fp32(candidate.fused), dst)
            return {"base": "fused" if candidate.fused else "exported"}
        if precision == "fp16":
            from ..quantize.onnx_fp16 import quantize_onnx_fp16

            return _guard("onnxconverter-common", lambda: quantize_onnx_fp16(self.onnx_fp32(False), dst))
        from ..quantize.onnx_int8 import quantize_onnx_int8

        settings = candidate.onnx_int8
        if candidate.fused and not settings.fused_graph:
            from dataclasses import replace

            settings = replace(settings, fused_graph=True)
        base = self.onnx_fp32(candidate.fused)
        return _guard("onnxruntime.quantization", lambda: quantize_onnx_int8(base, dst, settings, self.calibration))

    def _build_tflite(self, candidate: Candidate, dst: Path) -> dict:
        base = self.tflite_fp32()
        if candidate.precision == "fp32":
            shutil.copyfile(base, dst)
            return {}
        from ..quantize.tflite_quant import quantize_tflite

        return _guard("ai-edge-quantizer", lambda: quantize_tflite(
            base, dst, candidate.precision, self.calibration, candidate.tflite_exclude))


def _guard(tool: str, func) -> dict:
    """Quantiser failures become ConversionErrors naming the tool, so the plan goes on."""
    try:
        return func()
    except ConversionError:
        raise
    except Exception as exc:
        from ..convert.onnx_export import _first_line

        raise ConversionError(f"{tool} failed: {_first_line(exc)}", tool, detail=str(exc)[:2000]) from None
