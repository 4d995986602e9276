"""onnxruntime sessions, with the provider that actually runs read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import EdgekitError
from ..models.onnx_model import load_onnx
from .base import Session, SessionOptions

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
SHORT = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}


class OrtSession(Session):
    format = "onnx"

    def __init__(self, path: Path, options: SessionOptions):
        import onnxruntime as ort

        if options.provider not in PROVIDERS:
            raise EdgekitError(f"unknown onnxruntime provider {options.provider!r}",
                               f"use one of {', '.join(PROVIDERS)}")
        model = load_onnx(Path(path), str(path))  # validates the file with a clear error
        self.inputs, self.outputs = model.inputs, model.outputs
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
            self.session = ort.InferenceSession(str(path), so, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EdgekitError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0][:300]}",
                               "the graph may use ops this onnxruntime build lacks") from None
        self.requested_provider = options.provider
        self.active_provider = SHORT.get(self.session.get_providers()[0], self.session.get_providers()[0])
        self._dtypes = {s.name: np.dtype(s.dtype) for s in self.inputs}

    def bind(self, feeds):
        cast = self._cast(feeds)
        run = self.session.run
        return lambda: run(None, cast)

    def _cast(self, feeds):
        return {k: (v if v.dtype == self._dtypes[k] else v.astype(self._dtypes[k])) for k, v in feeds.items()}

    def run(self, feeds):
        return self.session.run(None, self._cast(feeds))
