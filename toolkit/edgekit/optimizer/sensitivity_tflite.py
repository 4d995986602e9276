"""Which quantised TFLite ops lose the most accuracy: intermediate tensors against fp32.

Both interpreters run without delegates and keep every tensor; tensors are matched by name (the
quantiser keeps op output names). As for ONNX, an op's sensitivity is the error it adds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import formats
from ..backends.base import SessionOptions
from ..backends.litert import _from_output, interpreter_class
from ..data import Dataset

WEIGHTED = {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL", "TRANSPOSE_CONV",
            "EMBEDDING_LOOKUP", "GATHER"}


def _tensors(path: Path, data: Dataset, samples: int, model=None) -> tuple[dict[str, np.ndarray], list[dict], dict]:
    cls = interpreter_class()
    import sys

    resolver = getattr(sys.modules[cls.__module__], "OpResolverType", None)
    kwargs = {"experimental_preserve_all_tensors": True}
    if resolver is not None:
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = cls(model_path=str(path), **kwargs)
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    collected: dict[str, list[np.ndarray]] = {}
    # names, layout and dtypes as the guard's own session feeds this file
    session = formats.get("tflite").open_session(path, SessionOptions(threads=1), model)
    for i in range(min(samples, len(data))):
        for detail, value in session.prepared(data.feeds(i, i + 1)):
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        for index, t in tensors.items():
            try:
                value = interpreter.get_tensor(index)
            except ValueError:
                continue  # tensors without data (constants folded away)
            collected.setdefault(t["name"], []).append(_from_output(value, t).astype(np.float64).ravel())
    ops = interpreter._get_ops_details()
    return {k: np.concatenate(v) for k, v in collected.items()}, ops, tensors


def op_sensitivity(fp32_path: Path, quant_path: Path, data: Dataset, model=None, samples: int = 8) -> list[str]:
    """Output tensor names of weighted ops, worst added error first."""
    ref, ops, tensors = _tensors(fp32_path, data, samples, model)
    got, _, _ = _tensors(quant_path, data, samples, model)
    error = {}
    for name, r in ref.items():
        g = got.get(name)
        if g is not None and g.shape == r.shape:
            error[name] = float(np.linalg.norm(r - g) / max(np.linalg.norm(r), 1e-12))
    scores = []
    for op in ops:
        if op["op_name"] not in WEIGHTED or not len(op["outputs"]):
            continue
        out = tensors[op["outputs"][0]]["name"]
        if out not in error:
            continue
        inherited = max((error.get(tensors[i]["name"], 0.0) for i in op["inputs"] if i >= 0), default=0.0)
        scores.append((out, error[out] - inherited))
    return [name for name, _ in sorted(scores, key=lambda t: t[1], reverse=True)]
