"""ONNX, run by onnxruntime on CPU, CUDA or TensorRT (how edgekit makes it: optimizer/recipes/onnx.py)."""

from __future__ import annotations

from . import ArtifactFormat


class Onnx(ArtifactFormat):
    name = "onnx"
    suffix = ".onnx"
    runtime = "onnxruntime"
    runtime_modules = ("onnxruntime",)
    serves = ("onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt")
    precisions = ("fp32", "fp16", "int8-dynamic", "int8-static")  # no int8 weight-only path in onnxruntime
    calibrated = frozenset({"int8-static"})
    sources = ("pytorch", "pt2", "onnx")
    needs = {"export": ("torch", "convert"), "fp16": ("onnxconverter-common", "convert")}

    # -- sessions ---------------------------------------------------------------------------------
    def open_session(self, path, options, model=None):
        from ..backends.onnxruntime import OrtSession

        return OrtSession(path, options)

    def open_variant(self, path, variant, threads, specs):
        from ..backends.base import SessionOptions

        return self.open_session(path, SessionOptions(threads=threads, provider=variant.get("provider", "cpu"),
                                                      allow_spinning=bool(variant.get("allow_spinning", False))))
