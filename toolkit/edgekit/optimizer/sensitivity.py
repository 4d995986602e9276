"""Which quantised nodes lose the most accuracy: compare intermediate tensors with fp32.

Both graphs are run with every float tensor they share exposed as an output. A node's own
sensitivity is the relative error it adds: the error of its output minus the worst error of its
inputs, so that errors inherited from earlier layers are not blamed on later ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import Dataset

QUANTISABLE = {"MatMul", "Gemm", "Conv", "Attention", "FusedMatMul", "ConvTranspose"}


def _expose_all(proto, names: set[str]):
    import onnx

    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    existing = {o.name for o in exposed.graph.output}
    for name in sorted(names - existing):
        exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return exposed


def _float_values(proto) -> set[str]:
    """Names of float tensors produced by nodes (from shape inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    floats = {v.name for v in list(inferred.graph.value_info) + list(inferred.graph.output)
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    return floats & {o for n in proto.graph.node for o in n.output}


def _run(proto, data: Dataset, names: list[str]) -> dict[str, np.ndarray]:
    from .._quiet import load_onnxruntime

    ort = load_onnxruntime()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    session = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    taken = {i.name for i in session.get_inputs()}  # a cleaned graph has fixed inputs folded in
    # a graph exported with a fixed batch (torch.onnx.export's default of 1) runs in that batch
    fixed = [i.shape[0] for i in session.get_inputs() if len(i.shape) >= 2 and isinstance(i.shape[0], int)]
    step = min(fixed) if fixed else len(data)
    parts = [session.run(names, {k: v for k, v in data.feeds(start, start + step).items() if k in taken})
             for start in range(0, len(data), step)]
    return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}


def output_head(path: Path) -> list[str]:
    """The nodes between the last weighted layer and the outputs (Concat, Sigmoid, Mul, Reshape...):
    where a detector joins boxes in pixels and scores in 0-1 into one tensor, which one int8 scale
    cannot hold. Kept in float, they cost little time and keep every slice of the output."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    head, todo, seen = [], [o.name for o in proto.graph.output], set()
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in QUANTISABLE and weights & set(node.input):
            continue  # a weighted layer: the head ends here
        head.append(node.name)
        todo.extend(node.input)
    return head


def node_sensitivity(fp32_path: Path, quant_path: Path, data: Dataset, samples: int = 16) -> list[tuple[str, float]]:
    """[(node name, added relative error)] for quantisable fp32 nodes, worst first."""
    import onnx

    fp32 = onnx.load(str(fp32_path))
    quant = onnx.load(str(quant_path))
    shared = _float_values(fp32) & {o for n in quant.graph.node for o in n.output}
    names = sorted(shared)
    # every intermediate tensor of every sample is kept at once: big inputs (a 320x320 page) get
    # fewer samples, so that one run stays within memory and a few seconds
    per_sample = sum(int(np.prod(v.shape[1:])) for v in data.arrays.values()) or 1
    subset = data.head(max(2, min(samples, 16 * 50_000 // per_sample)))
    ref = _run(_expose_all(fp32, shared), subset, names)
    got = _run(_expose_all(quant, shared), subset, names)
    error = {}
    for name in names:
        r, g = ref[name].astype(np.float64), got[name].astype(np.float64)
        if r.shape != g.shape:
            continue
        error[name] = float(np.linalg.norm(r - g) / max(np.linalg.norm(r), 1e-12))
    weights = {t.name for t in fp32.graph.initializer}
    scores = []
    for node in fp32.graph.node:
        # Only nodes with a weight are quantised (activation x activation MatMuls stay float).
        if node.op_type not in QUANTISABLE or not weights & set(node.input) or node.output[0] not in error:
            continue
        inherited = max((error.get(i, 0.0) for i in node.input), default=0.0)
        scores.append((node.name, error[node.output[0]] - inherited))
    return sorted(scores, key=lambda t: t[1], reverse=True)
