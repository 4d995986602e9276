"""Clean an ONNX graph before anything else happens to it: fold fixed inputs, simplify.

Exported graphs carry what their exporter needed, not what a device should run: Silero VAD
branches on its sample rate with ``If`` (onnxruntime's quantiser does not look inside the
branches, so its "int8" is fp32), PaddleOCR's exports keep hundreds of ``Constant`` nodes and
unfused BatchNorms. A fixed input (``--input sr:=16000``) becomes a constant, onnxslim folds
constants, inlines branches whose condition is now known and simplifies shapes; for converters
that need static shapes, dims are fixed to the data's sizes (batch 1) and node names made valid
TensorFlow scope names (Paddle's ``Softmax@0`` is not). What changed is returned for the report.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import first_line
from ..spec import Model


def _scope_name(name: str, op: str, index: int) -> str:
    clean = re.sub(r"[^A-Za-z0-9_./-]", "_", name or "")
    return clean if clean and clean[0].isalpha() else f"{op}_{index}{('_' + clean) if clean else ''}"


def clean(model: Model, dst: Path, example: Optional[dict[str, np.ndarray]] = None) -> dict:
    """A cleaned copy of the ONNX source at ``dst``: fixed values folded in, simplified by onnxslim;
    with ``example`` (one sample as the model takes it) also static shapes and valid node names,
    for converters. Returns what changed."""
    import onnx
    import onnx.version_converter
    from onnx import numpy_helper

    proto = onnx.load(str(model.path))
    before = Counter(n.op_type for n in proto.graph.node)
    specs = {s.name: s for s in model.inputs}
    folded = []
    for vi in list(proto.graph.input):
        spec = specs.get(vi.name)
        if spec is None:
            continue
        if spec.value is not None:  # a fixed value becomes a constant of the graph
            proto.graph.initializer.append(numpy_helper.from_array(spec.fixed_value(), vi.name))
            proto.graph.input.remove(vi)
            folded.append(vi.name)
            continue
        if example is not None:
            for d, size in zip(vi.type.tensor_type.shape.dim, example[vi.name].shape):
                d.Clear()
                d.dim_value = int(size)
    renamed = 0
    if example is not None:
        for vo in proto.graph.output:  # sizes come back from shape inference
            for d in vo.type.tensor_type.shape.dim:
                if not d.HasField("dim_value"):
                    d.Clear()
        for i, node in enumerate(proto.graph.node):
            name = _scope_name(node.name, node.op_type, i)
            renamed += name != node.name
            node.name = name
    info = {"folded_inputs": folded, "nodes_before": sum(before.values())}
    if example is not None:
        info |= {"fixed_shapes": {k: list(v.shape) for k, v in example.items() if k not in folded},
                 "renamed_nodes": renamed}
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset < 13:  # per-channel int8 (QDQ with an axis) needs opset 13; Paddle exports at 11-12
        try:
            proto = onnx.version_converter.convert_version(proto, 13)
            info["opset"] = f"{opset} -> 13"
        except Exception as exc:
            info["opset"] = f"{opset} (conversion to 13 failed: {first_line(exc, 120)})"
    try:
        import onnxslim

        slim = onnxslim.slim(proto)
        if slim is not None:
            proto = slim
        info["cleaner"] = f"onnxslim {onnxslim.__version__}"
    except ImportError:
        info["cleaner"] = "none (onnxslim is not installed)"
    except Exception as exc:  # a graph onnxslim cannot simplify is converted as it is
        info["cleaner"] = f"onnxslim failed ({first_line(exc, 120)}); converted unsimplified"
    after = Counter(n.op_type for n in proto.graph.node)
    info["nodes_after"] = sum(after.values())
    info["ops_removed"] = {op: before[op] - after.get(op, 0) for op in before if before[op] > after.get(op, 0)}
    onnx.save(proto, str(dst))
    return info


