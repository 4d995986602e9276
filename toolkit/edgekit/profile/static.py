"""Static analysis of an ONNX graph: per node parameters, weight bytes, FLOPs, activation
traffic and arithmetic intensity; peak activation memory over the execution order; size by dtype.

FLOPs count a multiply-add as two. Element-wise ops count one FLOP per output element, except
transcendental ones (exp, erf, tanh...), which count a typical polynomial cost.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from .._io import scratch_cwd

ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "Clip", "Max", "Min", "Neg", "Abs", "Sqrt",
               "Pow", "Where", "Equal", "Greater", "Less", "Not", "And", "Or", "Cast", "BiasAdd", "PRelu",
               "HardSigmoid", "HardSwish", "Reciprocal", "Floor", "Ceil", "Round", "Sign"}
TRANSCENDENTAL = {"Exp": 8, "Log": 8, "Erf": 8, "Tanh": 8, "Sigmoid": 8, "Gelu": 10, "FastGelu": 10,
                  "BiasGelu": 10, "Softplus": 8, "Mish": 12, "Sin": 8, "Cos": 8}
NORMALISATION = {"LayerNormalization": 8, "SkipLayerNormalization": 9, "SimplifiedLayerNormalization": 6,
                 "BatchNormalization": 2, "InstanceNormalization": 8, "GroupNormalization": 8,
                 "Softmax": 5, "LogSoftmax": 6}
REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceProd", "GlobalAveragePool",
          "GlobalMaxPool"}
MOVEMENT = {"Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "Squeeze",
            "Unsqueeze", "Expand", "Flatten", "Shape", "Identity", "Pad", "Tile", "Resize", "ConstantOfShape",
            "Range", "ScatterND", "DepthToSpace", "SpaceToDepth"}
COMPUTE = {"Conv", "ConvTranspose", "MatMul", "Gemm", "FusedMatMul", "Attention", "MultiHeadAttention",
           "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "DynamicQuantizeMatMul"}


def op_class(op_type: str) -> str:
    """The classes the roofline calibrates separately: their kernels differ in efficiency."""
    if op_type in COMPUTE:
        return "matmul/conv"
    if op_type in NORMALISATION:
        return "normalisation"
    if op_type in MOVEMENT:
        return "data movement"
    if op_type in REDUCE or "Pool" in op_type:
        return "reduction/pooling"
    return "elementwise"


@dataclass
class NodeStats:
    name: str
    op_type: str
    op_class: str
    params: int = 0
    weight_bytes: int = 0
    macs: int = 0
    flops: int = 0
    bytes_read: int = 0  # activations and weights the node reads
    bytes_written: int = 0
    output_shape: list = field(default_factory=list)
    groups: int = 1  # convolutions: a depthwise one has groups == out_channels
    out_channels: int = 0
    inputs: list = field(default_factory=list)  # value names, for the kernel fusion of the fitted estimate
    outputs: list = field(default_factory=list)

    @property
    def intensity(self) -> float:
        traffic = self.bytes_read + self.bytes_written
        return self.flops / traffic if traffic else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"intensity": self.intensity}


@dataclass
class StaticProfile:
    nodes: list[NodeStats]
    params: int
    size_by_dtype: dict[str, int]  # bytes of initializers per dtype
    peak_activation_bytes: int
    peak_at: str
    input_shapes: dict[str, list[int]]

    @property
    def flops(self) -> int:
        return sum(n.flops for n in self.nodes)

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    def by_op_type(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for n in self.nodes:
            row = out.setdefault(n.op_type, {"count": 0, "params": 0, "flops": 0, "macs": 0, "bytes": 0,
                                             "op_class": n.op_class})
            row["count"] += 1
            row["params"] += n.params
            row["flops"] += n.flops
            row["macs"] += n.macs
            row["bytes"] += n.bytes_read + n.bytes_written
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["flops"]))

    def to_dict(self) -> dict:
        return {"params": self.params, "flops": self.flops, "macs": self.macs, "size_by_dtype": self.size_by_dtype,
                "peak_activation_bytes": self.peak_activation_bytes, "peak_at": self.peak_at,
                "input_shapes": self.input_shapes, "by_op_type": self.by_op_type(),
                "nodes": [n.to_dict() for n in self.nodes]}


def _shapes(proto, input_shapes: dict[str, list[int]]):
    """Concrete shapes and dtypes for every value, after fixing dynamic input dims."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    for vi in model.graph.input:
        if vi.name in input_shapes:
            dims = vi.type.tensor_type.shape.dim
            for d, size in zip(dims, input_shapes[vi.name]):
                d.ClearField("dim_param")
                d.dim_value = size
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # shape inference of exotic graphs: fall back to what the file states
        inferred = model
    known = {vi.name for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
             if vi.type.tensor_type.HasField("shape")
             and all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)}
    unknown = any(o not in known for n in inferred.graph.node for o in n.output if o)
    if unknown or any(n.domain == "com.microsoft" for n in model.graph.node):
        # onnx's inference stops at onnxruntime's contrib ops and at shapes computed in the graph
        # (a channel split as Shape/Gather/Div/Slice: ShuffleNet's chunk); onnxruntime's symbolic
        # inference evaluates those, so convolutions after them keep their multiply-adds.

        try:
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

            with scratch_cwd():  # an incomplete inference saves its graph into the cwd
                inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
        except Exception:
            pass
    table = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if all(d is not None for d in dims):
            table[vi.name] = (dims, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize if t.elem_type else 4)
    for init in inferred.graph.initializer:
        table[init.name] = (list(init.dims), onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize)
    return inferred, table


def _numel(shape) -> int:
    return int(np.prod(shape)) if shape else 1


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def _macs(node, shape) -> int:
    """Multiply-adds of the heavy ops; 0 elsewhere."""
    op = node.op_type
    out = shape(node.output[0]) if node.output else None
    if out is None:
        return 0
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = shape(node.input[3 if op == "QLinearConv" else 1])
        if w is None:
            return 0
        return _numel(out) * _numel(w[1:])  # each output: Cin/groups x kH x kW multiply-adds
    if op == "ConvTranspose":
        x, w = shape(node.input[0]), shape(node.input[1])
        return _numel(x) * _numel(w[1:]) if x and w else 0
    if op in ("MatMul", "MatMulInteger", "FusedMatMul", "DynamicQuantizeMatMul", "QLinearMatMul"):
        a = shape(node.input[0])
        return _numel(out) * a[-1] if a else 0  # every output element: K multiply-adds
    if op == "Gemm":
        a = shape(node.input[0])
        k = a[0] if _attr(node, "transA", 0) else a[-1]
        return _numel(out) * k if a else 0
    if op in ("Attention", "MultiHeadAttention"):
        q = shape(node.input[0])
        if not q or len(q) != 3:
            return 0
        b, s, h = q
        proj = b * s * h * 3 * h if op == "Attention" else 0
        return proj + 2 * b * s * s * h  # QK^T and attention x V
    return 0


def _flops(node, shape, macs: int) -> int:
    op = node.op_type
    out = shape(node.output[0]) if node.output else None
    n_out = _numel(out) if out is not None else 0
    if macs:
        bias = n_out if (op in ("Conv", "Gemm") and len(node.input) > 2) else 0
        return 2 * macs + bias
    if op in TRANSCENDENTAL:
        return TRANSCENDENTAL[op] * n_out
    if op in NORMALISATION:
        x = shape(node.input[0])
        return NORMALISATION[op] * (_numel(x) if x else n_out)
    if op in REDUCE:
        x = shape(node.input[0])
        return _numel(x) if x else 0
    if "Pool" in op:
        kernel = _attr(node, "kernel_shape", [1])
        return n_out * _numel(kernel)
    if op in MOVEMENT:
        return 0
    return n_out  # element-wise and anything unlisted: one per output element


def analyse(proto, input_shapes: Optional[dict[str, list[int]]] = None) -> StaticProfile:
    """Static profile of ``proto``; dynamic input dims take ``input_shapes`` (default: 1)."""
    init_names = {t.name for t in proto.graph.initializer}
    fixed: dict[str, list[int]] = {}
    for vi in proto.graph.input:
        if vi.name in init_names:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
        fixed[vi.name] = list((input_shapes or {}).get(vi.name, dims))
    inferred, table = _shapes(proto, fixed)

    def shape(name):
        entry = table.get(name)
        return entry[0] if entry else None

    def nbytes(name):
        entry = table.get(name)
        return _numel(entry[0]) * entry[1] if entry else 0

    import onnx

    size_by_dtype: Counter = Counter()
    params = 0
    for init in inferred.graph.initializer:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        count = _numel(list(init.dims))
        params += count
        size_by_dtype[dtype.name] += count * dtype.itemsize

    nodes = []
    for index, node in enumerate(inferred.graph.node):
        macs = _macs(node, shape)
        weights = [i for i in node.input if i in init_names]
        stats = NodeStats(
            name=node.name or f"{node.op_type}_{index}", op_type=node.op_type, op_class=op_class(node.op_type),
            params=sum(_numel(shape(w)) for w in weights if shape(w) is not None),
            weight_bytes=sum(nbytes(w) for w in weights), macs=macs, flops=_flops(node, shape, macs),
            bytes_read=sum(nbytes(i) for i in node.input if i), bytes_written=sum(nbytes(o) for o in node.output if o),
            output_shape=shape(node.output[0]) or [] if node.output else [],
            inputs=[i for i in node.input if i and i not in init_names], outputs=[o for o in node.output if o],
        )
        if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            w = shape(node.input[3 if node.op_type == "QLinearConv" else 1])
            stats.groups, stats.out_channels = int(_attr(node, "group", 1)), int(w[0]) if w else 0
        if node.op_type in ("Gather",) and weights:  # an embedding lookup reads rows, not the table
            stats.bytes_read = stats.bytes_written + sum(nbytes(i) for i in node.input if i not in init_names)
        nodes.append(stats)
    peak, at = _peak_activation(inferred, init_names, nbytes)
    return StaticProfile(nodes, params, dict(size_by_dtype), peak, at, fixed)


def _peak_activation(proto, init_names, nbytes) -> tuple[int, str]:
    """Live activation bytes along the graph's execution order: a tensor lives from its producer
    (or the start, for graph inputs) to its last consumer; outputs live to the end."""
    last_use: dict[str, int] = {}
    for index, node in enumerate(proto.graph.node):
        for name in node.input:
            last_use[name] = index
    for out in proto.graph.output:
        last_use[out.name] = len(proto.graph.node)
    live = {vi.name: nbytes(vi.name) for vi in proto.graph.input if vi.name not in init_names}
    peak, at = sum(live.values()), "inputs"
    for index, node in enumerate(proto.graph.node):
        for name in node.output:
            if name:
                live[name] = nbytes(name)
        current = sum(live.values())
        if current > peak:
            peak, at = current, node.name or node.op_type
        for name in list(live):
            if last_use.get(name, -1) <= index:
                del live[name]
    return peak, at
