"""TFLite, run by LiteRT (ai-edge-litert, or tflite_runtime on older devices) with XNNPACK, or
compiled for the Edge TPU (how edgekit makes it: optimizer/recipes/tflite.py)."""

from __future__ import annotations

from . import ArtifactFormat


class Tflite(ArtifactFormat):
    name = "tflite"
    suffix = ".tflite"
    runtime = "litert"
    runtime_modules = ("ai_edge_litert", "tflite_runtime")
    serves = ("litert-xnnpack", "litert-gpu", "edgetpu")
    precisions = ("fp32", "fp16", "int8-dynamic", "int8-static", "int8-weight-only")
    calibrated = frozenset({"int8-static"})
    sources = ("pytorch", "pt2", "tflite", "onnx")
    needs = {"export": ("litert-torch", "tflite"), "quantize": ("ai-edge-quantizer", "tflite"),
             "run": ("ai-edge-litert", "litert")}

    # -- sessions ---------------------------------------------------------------------------------
    def open_session(self, path, options, model=None):
        from ..backends.litert import LiteRTSession

        # a TFLite converted from ONNX by onnx2tf takes NHWC: the conversion recorded its layout
        layout = getattr(model, "meta", {}).get("tflite_layout") if model is not None and model.format == "onnx" else None
        return LiteRTSession(path, options, model, layout)

    def open_variant(self, path, variant, threads, specs):
        from types import SimpleNamespace

        from ..backends.base import SessionOptions
        from ..backends.litert import LiteRTSession
        from ..spec import TensorSpec

        inputs, outputs = ([TensorSpec(s["name"], tuple(s["shape"]), s["dtype"], s.get("batch_axis", 0),
                                       tuple(s["value"]) if s.get("value") is not None else None, s.get("state_of"))
                            for s in group] for group in specs)
        return LiteRTSession(path, SessionOptions(threads=threads), SimpleNamespace(inputs=inputs, outputs=outputs),
                             variant.get("layout"))
