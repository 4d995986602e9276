"""ONNX int8 with onnxruntime.quantization: dynamic, and static QDQ with calibration."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

from .._quiet import quiet
from ..data import Dataset
from ..errors import EdgekitError

Calibration = Literal["minmax", "entropy", "percentile"]


@dataclass(frozen=True)
class OnnxInt8Settings:
    mode: Literal["dynamic", "static"] = "dynamic"
    per_channel: bool = True
    activation_type: Literal["int8", "uint8"] = "uint8"
    weight_type: Literal["int8", "uint8"] = "int8"
    reduce_range: bool = False
    calibration: Calibration = "minmax"
    calibration_samples: int = 128
    exclude: tuple[str, ...] = ()  # node names kept in float
    fused_graph: bool = False  # quantising a graph after onnxruntime's transformer fusions

    def __post_init__(self):
        if self.mode == "dynamic" and self.activation_type != "uint8":
            # DynamicQuantizeLinear produces uint8 only.
            raise ValueError("dynamic quantisation quantises activations to uint8; set activation_type='uint8'")
        if self.calibration not in ("minmax", "entropy", "percentile"):
            raise ValueError(f"unknown calibration {self.calibration!r}; use minmax, entropy or percentile")

    def label(self) -> str:
        a, w = ("S8" if self.activation_type == "int8" else "U8"), ("S8" if self.weight_type == "int8" else "U8")
        parts = [f"{a}{w}", "per-channel" if self.per_channel else "per-tensor"]
        if self.reduce_range:
            parts.append("reduce_range")
        if self.mode == "static":
            parts += ["QDQ", self.calibration]
        if self.exclude:
            parts.append(f"{len(self.exclude)} nodes in float")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


class _Reader:
    """onnxruntime's CalibrationDataReader over a Dataset, in batches of 8 (or of the graph's fixed
    batch: torch.onnx.export's default is batch 1, and batches of 8 failed every calibration),
    fed only what the graph takes (a cleaned graph has fixed inputs folded into it)."""

    def __init__(self, data: Dataset, limit: int, names: Optional[set[str]] = None, batch: int = 8):
        self._batches = [{k: v for k, v in b.items() if names is None or k in names}
                         for b in data.head(limit).batches(batch)]
        self._i = 0

    def get_next(self):
        if self._i >= len(self._batches):
            return None
        self._i += 1
        return self._batches[self._i - 1]

    def rewind(self):
        self._i = 0


def _graph_inputs(path: Path) -> tuple[set[str], int]:
    """(the graph's input names, the calibration batch: its fixed first dimension where an input
    with a rank of 2 or more has one, else 8)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    fixed = [dims[0].dim_value for i in inputs for dims in [i.type.tensor_type.shape.dim]
             if len(dims) >= 2 and dims[0].HasField("dim_value") and dims[0].dim_value > 0]
    return {i.name for i in inputs}, min(fixed) if fixed else 8


def quantize_onnx_int8(src: Path, dst: Path, settings: OnnxInt8Settings,
                       calibration: Optional[Dataset] = None) -> dict:
    import onnx
    from onnxruntime import quantization as q

    qtype = {"int8": q.QuantType.QInt8, "uint8": q.QuantType.QUInt8}
    # Dynamic mode first rewrites Gemm as MatMul + Add, naming the MatMul '<gemm>_MatMul'; an
    # excluded Gemm must stay excluded under its new name.
    exclude = [name for n in settings.exclude for name in (n, f"{n}_MatMul")]
    extra = {}
    if settings.fused_graph:
        # Fused com.microsoft ops carry no type information for their weights; without this
        # onnxruntime fails with "Unable to find data type for weight_name".
        extra["DefaultTensorType"] = onnx.TensorProto.FLOAT
    with quiet():
        if settings.mode == "dynamic":
            q.quantize_dynamic(
                str(src), str(dst), weight_type=qtype[settings.weight_type], per_channel=settings.per_channel,
                reduce_range=settings.reduce_range, nodes_to_exclude=exclude, extra_options=extra,
            )
        else:
            if calibration is None or len(calibration) == 0:
                raise EdgekitError("static int8 needs calibration data", "pass --data")
            method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                      "percentile": q.CalibrationMethod.Percentile}[settings.calibration]
            extra.update({"ActivationSymmetric": settings.activation_type == "int8", "WeightSymmetric": True})
            q.quantize_static(
                str(src), str(dst), _Reader(calibration, settings.calibration_samples, *_graph_inputs(src)),
                quant_format=q.QuantFormat.QDQ, activation_type=qtype[settings.activation_type],
                weight_type=qtype[settings.weight_type], per_channel=settings.per_channel,
                reduce_range=settings.reduce_range, calibrate_method=method,
                nodes_to_exclude=exclude, extra_options=extra,
            )
    proto = onnx.load(str(dst), load_external_data=False)
    ops = [n.op_type for n in proto.graph.node]
    integer_ops = sum(op in ("MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv",
                             "DynamicQuantizeMatMul", "QuantizeLinear") for op in ops)
    return {"settings": settings.to_dict(), "label": settings.label(), "quantized_ops": integer_ops}
