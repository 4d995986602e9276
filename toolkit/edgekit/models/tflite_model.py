"""Load and describe TFLite (LiteRT) files with ai-edge-litert, or tflite_runtime on old devices."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..backends.litert import _spec, open_interpreter, runtime_name
from ..spec import Model

_WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D"}
def load_tflite(path: Path, source: str) -> Model:
    interpreter = open_interpreter(path, delegates=False)
    return Model(
        name=path.stem, format="tflite", source=source, path=path,
        inputs=[_spec(d) for d in interpreter.get_input_details()],
        outputs=[_spec(d) for d in interpreter.get_output_details()],
        meta={"interpreter": interpreter},
    )


def describe_tflite(model: Model) -> dict:
    interpreter = model.meta.get("interpreter") or open_interpreter(model.path, delegates=False)
    ops = interpreter._get_ops_details()  # the only public-enough view of the op list
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    produced = {o for op in ops for o in op["outputs"]}
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    constants = set()
    for op in ops:
        for i in op["inputs"]:
            if i < 0 or i in produced or i in graph_inputs or i not in tensors:
                continue
            # Integer constants are shapes, axes and permutations, except the int32 biases of
            # quantised convolutions and fully connected layers.
            integer = np.dtype(tensors[i]["dtype"]).name in ("int32", "int64")
            if integer and op["op_name"] not in _WEIGHTED_OPS:
                continue
            constants.add(i)
    params = 0
    by_dtype: Counter = Counter()
    for index in constants:
        tensor = tensors.get(index)
        if tensor is None:
            continue
        count = int(np.prod(tensor["shape"])) if len(tensor["shape"]) else 1
        params += count
        by_dtype[np.dtype(tensor["dtype"]).name] += count
    return {
        "parameters": params,
        "parameters_by_dtype": dict(by_dtype),
        "opset": None,
        "runtime": runtime_name(),
        "ops": dict(Counter(op["op_name"] for op in ops).most_common()),
    }
