"""Load and describe ONNX files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import ModelLoadError, first_line
from ..spec import Model, TensorSpec


def _dims(value_info) -> tuple:
    shape = value_info.type.tensor_type.shape
    dims = []
    for d in shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:  # Paddle writes -1 for a dynamic dim
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param)  # unnamed: the loader names it after its tensor
    return tuple(dims)


def _dtype(value_info) -> str:
    import onnx

    elem = value_info.type.tensor_type.elem_type
    return onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "float32"


def read_onnx(path: Path):
    """Parse and check an ONNX file; a truncated or foreign file is a ModelLoadError."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
        raise ModelLoadError(
            f"{path} is not a valid ONNX file ({type(exc).__name__}: {exc})",
            "the file may be truncated or not ONNX; re-export it",
        ) from None
    if proto.ir_version <= 0 or not proto.graph.node:
        raise ModelLoadError(
            f"{path} is not a valid ONNX file (no graph found)",
            "the file may be truncated or not ONNX; re-export it",
        )
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # the checker raises several types; all mean the same to a user
        raise ModelLoadError(
            f"{path} fails the ONNX checker: {first_line(exc)}", "re-export the model or fix the graph"
        ) from None
    return proto


def load_onnx(path: Path, source: str) -> Model:
    proto = read_onnx(path)
    init_names = {t.name for t in proto.graph.initializer}
    inputs = [
        TensorSpec(v.name, _dims(v), _dtype(v)) for v in proto.graph.input if v.name not in init_names
    ]
    outputs = [TensorSpec(v.name, _dims(v), _dtype(v)) for v in proto.graph.output]
    return Model(
        name=path.stem, format="onnx", source=source, inputs=inputs, outputs=outputs, path=path,
        meta={"proto": proto},
    )


def describe_onnx(model: Model) -> dict:
    import numpy as np
    import onnx

    proto = model.meta.get("proto") or read_onnx(model.path)
    params = 0
    by_dtype: Counter = Counter()
    for tensor in proto.graph.initializer:
        count = int(np.prod(tensor.dims)) if tensor.dims else 1
        params += count
        by_dtype[onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).name] += count
    ops = Counter(node.op_type for node in proto.graph.node)
    opsets = {imp.domain or "ai.onnx": imp.version for imp in proto.opset_import}
    return {
        "parameters": params,
        "parameters_by_dtype": dict(by_dtype),
        "opset": opsets.get("ai.onnx"),
        "opsets": opsets,
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "ops": dict(ops.most_common()),
    }
