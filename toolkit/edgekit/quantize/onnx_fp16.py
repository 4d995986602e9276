"""ONNX fp16 with onnxconverter-common: float32 inputs and outputs kept, risky ops left in fp32."""

from __future__ import annotations

from pathlib import Path

from .._quiet import quiet
from ..errors import require

# Ops that must stay fp32 on every runtime: onnxconverter-common's own defaults plus ops whose
# fp16 results are unstable or that break conversion (issues 287 RandomNormalLike, 320 Cast).
ALWAYS_FP32 = ("RandomNormalLike", "RandomUniformLike", "RandomNormal", "RandomUniform", "Range",
               "NonMaxSuppression", "TopK", "Resize", "Upsample", "Cast")


def quantize_onnx_fp16(src: Path, dst: Path) -> dict:
    """fp16 for GPU providers. (onnxruntime's CPU provider lacks fp16 kernels for most ops, so
    the planner never asks for this on CPU targets; blocking most ops instead makes
    onnxconverter-common's cast insertion run away, measured here.)"""
    import onnx

    float16 = require("onnxconverter_common.float16", "onnxconverter-common", "convert", "ONNX fp16")
    proto = onnx.load(str(src))
    block = set(ALWAYS_FP32) | set(float16.DEFAULT_OP_BLOCK_LIST)
    with quiet():
        converted = float16.convert_float_to_float16(
            proto, keep_io_types=True, op_block_list=sorted(block), disable_shape_infer=False
        )
    onnx.checker.check_model(converted)
    onnx.save(converted, str(dst))
    kept = sorted({n.op_type for n in converted.graph.node} & block)
    return {"keep_io_types": True, "blocked_ops": kept}
