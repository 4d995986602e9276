"""What the Edge TPU compiler would map to the TPU, and what it would leave on the CPU.

edgetpu_compiler runs only on x86-64 Debian with Coral's apt repository; edgekit reads the same
rules from the full-integer TFLite it builds, so the report says before anyone compiles: an op
runs on the TPU only if Coral lists it, its tensors are 8-bit quantised, and none has more than
three dimensions larger than one. The compiler cuts the graph once: the first op that cannot
run on the TPU and every op after it stay on the CPU (a trailing DEQUANTIZE is expected there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Coral documentation, "TensorFlow models on the Edge TPU": supported operations (compiler 16).
TPU_OPS = {
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "L2_NORMALIZATION", "LOGISTIC", "UNIDIRECTIONAL_SEQUENCE_LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM",
    "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1",
    "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
    "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
    "HARD_SWISH",
}
MAX_RANK = 3  # dimensions larger than one


def _why_not(op: dict, tensors: dict, constants: set[int]) -> str:
    name = op["op_name"]
    if name not in TPU_OPS:
        return f"{name} has no Edge TPU kernel"
    for index in list(op["inputs"]) + list(op["outputs"]):
        if index < 0 or index not in tensors:
            continue
        t = tensors[index]
        dtype = np.dtype(t["dtype"]).name
        # int32 constants are parameters (biases, paddings, shapes, axes), not data
        parameter = dtype in ("int32", "int64") and index in constants
        if dtype not in ("int8", "uint8") and not parameter and not (name == "QUANTIZE" and index in op["inputs"]):
            return f"{name} works on {dtype} tensor {t['name']!r}, not 8-bit"
        if index not in constants and sum(1 for d in t["shape"] if d > 1) > MAX_RANK:  # weights may be 4-D
            return (f"{name} has a tensor of shape {[int(d) for d in t['shape']]}: more than {MAX_RANK} dims "
                    "larger than one")
    return ""


def partition(path: Path) -> dict:
    """Ops on the TPU and on the CPU, in graph order, with the reason for the first CPU op."""
    from ...backends.litert import open_interpreter

    interpreter = open_interpreter(Path(path), delegates=False)
    ops = interpreter._get_ops_details()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    produced = {o for op in ops for o in op["outputs"]} | {d["index"] for d in interpreter.get_input_details()}
    constants = {i for op in ops for i in op["inputs"] if i >= 0 and i not in produced}
    cut, why = None, ""
    for i, op in enumerate(ops):
        why = _why_not(op, tensors, constants)
        if why:
            cut = i
            break
    tpu = ops if cut is None else ops[:cut]
    cpu = [] if cut is None else ops[cut:]
    trailing_dequantize = bool(cpu) and all(o["op_name"] == "DEQUANTIZE" for o in cpu)
    return {
        "ops": len(ops), "tpu_ops": len(tpu), "cpu_ops": len(cpu),
        "first_cpu_op": None if cut is None else {"index": cut, "op": ops[cut]["op_name"], "why": why},
        "cpu_op_types": sorted({o["op_name"] for o in cpu}),
        "all_on_tpu": not cpu or trailing_dequantize,
    }


def describe(result: dict) -> str:
    if result["all_on_tpu"]:
        tail = " (the final DEQUANTIZE runs on the CPU)" if result["cpu_ops"] else ""
        return f"Edge TPU: all {result['tpu_ops']} compute ops map to the TPU{tail}"
    first = result["first_cpu_op"]
    return (f"Edge TPU: {result['tpu_ops']} of {result['ops']} ops map to the TPU; from op {first['index']} "
            f"({first['why']}) the compiler leaves {result['cpu_ops']} ops on the CPU: "
            f"{', '.join(result['cpu_op_types'])}")
