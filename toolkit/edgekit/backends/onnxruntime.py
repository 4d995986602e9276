"""onnxruntime sessions, with the provider that actually runs read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import EdgekitError, ModelLoadError, first_line
from ..spec import TensorSpec
from .base import Session, SessionOptions

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
SHORT = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}


_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
          "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
          "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def _spec(arg) -> TensorSpec:
    """A tensor spec from onnxruntime's own view of the graph: unknown dims keep their names."""
    dims = tuple(d if isinstance(d, int) else (d or f"d{i}") for i, d in enumerate(arg.shape or ()))
    return TensorSpec(arg.name, dims, _TYPES.get(arg.type, "float32"))


class OrtSession(Session):
    format = "onnx"

    def __init__(self, path: Path, options: SessionOptions):
        from .._quiet import load_onnxruntime

        ort = load_onnxruntime()
        if options.provider not in PROVIDERS:
            raise EdgekitError(f"unknown onnxruntime provider {options.provider!r}",
                               f"use one of {', '.join(PROVIDERS)}")
        path = Path(path)
        if not path.is_file() or path.stat().st_size == 0:
            raise ModelLoadError(f"{path} does not exist or is empty", "check the path, or re-export the model")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if options.threads:
            so.intra_op_num_threads = options.threads
            so.inter_op_num_threads = 1
        if not options.allow_spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        available = set(ort.get_available_providers())
        wanted = [p for p in PROVIDERS[options.provider] if p in available] or ["CPUExecutionProvider"]
        try:
            # onnxruntime checks the graph itself: no onnx.checker pass here, which would cost the
            # device a second parse of the model at every load.
            self.session = ort.InferenceSession(str(path), so, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own exception types
            text = first_line(exc)
            if "INVALID_PROTOBUF" in text or "Protobuf parsing failed" in text:
                raise ModelLoadError(f"{path} is not a valid ONNX file ({text})",
                                     "the file may be truncated or not ONNX; re-export it") from None
            raise EdgekitError(f"onnxruntime cannot load {path}: {text}",
                               "the graph may use ops this onnxruntime build lacks") from None
        self.inputs = [_spec(v) for v in self.session.get_inputs()]
        self.outputs = [_spec(v) for v in self.session.get_outputs()]
        self.requested_provider = options.provider
        self.active_provider = SHORT.get(self.session.get_providers()[0], self.session.get_providers()[0])
        self._dtypes = {s.name: np.dtype(s.dtype) for s in self.inputs}

    def bind(self, feeds):
        cast = self._cast(feeds)
        run = self.session.run
        return lambda: run(None, cast)

    def _cast(self, feeds):
        # feeds the graph does not take are left out: a cleaned graph has its fixed inputs
        # (a sample rate) folded in, and the caller still passes them as the model declares
        dtypes = self._dtypes
        return {k: (v if v.dtype == dtypes[k] else v.astype(dtypes[k])) for k, v in feeds.items() if k in dtypes}

    def run(self, feeds):
        return self.session.run(None, self._cast(feeds))
