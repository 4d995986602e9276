"""What will not work on a target: checked against the profile's constraints and runtimes."""

from __future__ import annotations

from ..devices.profile import Profile
from .static import StaticProfile

# ONNX op types whose TFLite counterparts the Edge TPU compiler maps to the TPU (Coral's
# "supported operations" table, by the ONNX name of the op that converts to them).
EDGETPU_OPS = {
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Relu", "Clip", "LeakyRelu", "PRelu",
    "Sigmoid", "Tanh", "Softmax", "AveragePool", "MaxPool", "GlobalAveragePool", "Concat", "Reshape",
    "Flatten", "Squeeze", "Unsqueeze", "Pad", "Resize", "Transpose", "ReduceMean", "Slice", "Split",
    "HardSwish", "Max", "Min", "Identity", "Gather", "Constant", "Shape", "Cast", "QuantizeLinear",
    "DequantizeLinear", "BatchNormalization",
}


def check(static: StaticProfile, proto, target: Profile, model_bytes: int) -> list[dict]:
    issues = []

    def add(severity, what, detail, fix):
        issues.append({"severity": severity, "what": what, "detail": detail, "fix": fix})

    con = target.constraints
    if "edgetpu" in target.runtimes:
        unsupported = []
        for index, node in enumerate(static.nodes):
            if node.op_type not in EDGETPU_OPS:
                unsupported.append((index, node))
        if unsupported:
            index, first = unsupported[0]
            ops = sorted({n.op_type for _, n in unsupported})
            add("error", "ops without an Edge TPU kernel",
                f"{', '.join(ops)}; the compiler partitions once, so node {index} ({first.name}, {first.op_type}) "
                f"and the {len(static.nodes) - index - 1} nodes after it would run on the CPU",
                "replace or move these ops to the end of the graph")
    if con.static_shapes:
        dynamic = [vi.name for vi in proto.graph.input
                   if any(d.dim_param or not d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)
                   and vi.name not in {t.name for t in proto.graph.initializer}]
        if dynamic:
            add("error", "dynamic shapes on a static-shape target",
                f"inputs {', '.join(dynamic)} have dynamic dimensions", "export with fixed shapes (--input NAME:1x...)")
    if con.max_rank:
        wide = [n for n in static.nodes if sum(1 for d in n.output_shape if d > 1) > con.max_rank]
        if wide:
            add("error", f"tensors with more than {con.max_rank} dimensions larger than one",
                f"{len(wide)} nodes, e.g. {wide[0].name} ({wide[0].op_type}) -> {wide[0].output_shape}",
                "reshape to at most three non-trivial dimensions")
    if con.full_int8_required:
        add("info", "full-integer int8 required", "the float model must be quantised with calibration data",
            "edgekit optimize --target " + target.id + " --data calib.npz")
    size_mb = model_bytes / 1e6
    if con.max_model_mb is not None and size_mb > con.max_model_mb:
        add("error", "model larger than the target's size budget", f"{size_mb:.1f} MB > {con.max_model_mb} MB",
            "quantise (int8 is 4x smaller) or prune")
    need_mb = (model_bytes + static.peak_activation_bytes) / 1e6
    if need_mb > target.memory.ram_mb:
        add("error", "model does not fit in memory", f"~{need_mb:.0f} MB needed, {target.memory.ram_mb} MB of RAM",
            "quantise or choose a bigger device")
    elif need_mb > target.memory.ram_mb / 4:
        add("warning", "model takes a large share of RAM", f"~{need_mb:.0f} MB of {target.memory.ram_mb} MB",
            "int8 weights cut this by about 4x")
    if static.size_by_dtype.get("float16", 0) and not target.fp16_arithmetic:
        add("info", "fp16 weights on a target without fp16 arithmetic", "they are widened to fp32 at load",
            "use int8 for speed; fp16 only halves the file here")
    return issues
