"""PyTorch -> TFLite with litert-torch (torch.export underneath; no TensorFlow needed).

The result is checked against torch on the example inputs, like the ONNX export.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._quiet import native_quiet, quiet
from ..errors import require
from ..spec import Model
from ..errors import ConversionError
from .onnx_export import _first_line


@dataclass
class TfliteResult:
    path: Path
    exporter: str
    seconds: float
    max_abs_diff: float
    buckets: tuple[int, ...] = ()  # one signature per sequence length (SIGNATURE.format(n))

    def to_dict(self) -> dict:
        data = {"file": self.path.name, "exporter": self.exporter, "seconds": round(self.seconds, 2),
                "max_abs_diff": self.max_abs_diff}
        if self.buckets:
            data["signatures"] = [SIGNATURE.format(n) for n in self.buckets]
        return data


# A model whose sequence varies becomes one signature per length bucket (shared weights, one
# file): litert-torch cannot convert MiniLM with a dynamic sequence (its int64 rewrite of arange,
# then its embedding lookups with symbolic sizes fail), and a fixed 128 pays for padding. The
# runtime (backends.litert) pads a sentence to the smallest bucket that holds it.
SIGNATURE = "len{}"


def _sized(model: Model, example: tuple, length: int) -> tuple:
    """The example cut or zero-padded to ``length`` on the varying axis (1) of the inputs that
    vary there: token ids and attention mask, where zeros are padding the mask hides."""
    torch = require("torch", "torch", "convert", "TFLite conversion")
    sized = []
    for spec, tensor in zip(model.inputs, example):
        if len(spec.shape) > 1 and isinstance(spec.shape[1], str):
            tensor = tensor[:, :length]
            if tensor.shape[1] < length:
                tensor = torch.nn.functional.pad(tensor, (0, length - tensor.shape[1]))
        sized.append(tensor)
    return tuple(sized)


def export_tflite(model: Model, path: Path, tolerance: float = 1e-3, buckets: tuple[int, ...] = ()) -> TfliteResult:
    """Convert with a fixed batch of one: what edge interpreters run, and what XNNPACK plans for;
    with ``buckets``, one signature per sequence length (see SIGNATURE)."""
    if not model.is_torch:
        raise ConversionError(
            f"{model.source} is {model.format}; TFLite conversion needs a PyTorch source",
            "litert-torch", hint="pass the PyTorch model (a factory or .pt2), not an exported file",
        )
    with quiet(), native_quiet():  # litert-torch's imports print about optional kernels
        litert_torch = require("litert_torch", "litert-torch", "tflite", "TFLite conversion")
    torch = require("torch", "torch", "convert", "TFLite conversion")
    path = Path(path)
    example = tuple(t[:1] for t in model.example_inputs)
    start = time.perf_counter()
    try:
        with quiet(), native_quiet():
            if buckets:
                converter = litert_torch
                for length in buckets:
                    converter = converter.signature(SIGNATURE.format(length), model.module.eval(),
                                                    _sized(model, example, length))
                edge = converter.convert()
                example = _sized(model, example, buckets[0])
            else:
                edge = litert_torch.convert(model.module.eval(), example)
            edge.export(str(path))
    except Exception as exc:
        path.unlink(missing_ok=True)
        raise ConversionError(f"TFLite conversion of {model.name} failed: {_first_line(exc)}",
                              "litert-torch", detail=str(exc)[:2000],
                              hint="litert-torch needs a torch.export-able model; see --debug") from None
    from ..formats import open_session

    session = open_session(path, model=model)
    feeds = {s.name: t.numpy() for s, t in zip(model.inputs, example)}
    got = session.run(feeds)
    with torch.no_grad():
        want = model.module(*example)
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    diff = max(float(np.max(np.abs(g - w.numpy()))) for g, w in zip(got, want))
    if not np.isfinite(diff) or diff > tolerance:
        path.unlink(missing_ok=True)
        raise ConversionError(f"TFLite output of {model.name} differs from torch by {diff:.3g}", "litert-torch")
    return TfliteResult(path, "litert-torch", time.perf_counter() - start, diff, tuple(buckets))
