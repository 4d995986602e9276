"""Bottlenecks with actions: concrete hints derived from the measured and static numbers."""

from __future__ import annotations

from ..devices.profile import Profile
from .static import StaticProfile

UNFUSED_SIGNS = {"Erf", "ReduceMean", "Pow", "Sqrt", "Softmax", "LayerNormalization"}


def _share(by_type: dict, types) -> float:
    return sum(v["share"] for k, v in by_type.items() if k in types)


def hints(static: StaticProfile, measured: dict | None, target: Profile, estimate: dict | None) -> list[dict]:
    out = []
    by_type = (measured or {}).get("by_op_type", {})
    heavy = {"MatMul", "Gemm", "Conv", "FusedMatMul", "ConvTranspose", "Attention"}
    heavy_share = _share(by_type, heavy)
    # an int8 dot product on the CPU, or an accelerator that computes in int8 (Edge TPU, NPUs)
    dot = target.int8_dot_product
    compute_bound = 0
    if estimate:
        rows = [r for r in estimate["nodes"] if r["op_type"] in heavy]
        compute_bound = sum(r["estimate_ms"] for r in rows if r["bound"] == "compute") / max(
            sum(r["estimate_ms"] for r in rows), 1e-9)
    if heavy_share > 0.5:
        if dot:
            out.append({"finding": f"MatMul/Gemm/Conv take {heavy_share:.0%} of the time"
                                   + (f", {compute_bound:.0%} of it compute-bound on {target.id}" if estimate else ""),
                        "action": f"int8 (dynamic for transformers, static for CNNs): {target.id} has an int8 dot "
                                  "product, so this is where int8 gains most"})
        else:
            out.append({"finding": f"MatMul/Gemm/Conv take {heavy_share:.0%} of the time; {target.id} has no int8 "
                                   "dot product", "action": "expect small int8 gains here; try fp16 only for size, "
                                                            "and keep fp32 if int8 is not faster when benchmarked"})
    total_weight = sum(n.weight_bytes for n in static.nodes) or 1
    gathers = [n for n in static.nodes if n.op_type == "Gather" and n.weight_bytes]
    gather_weight = sum(n.weight_bytes for n in gathers) / total_weight
    if gathers and gather_weight > 0.25 and _share(by_type, {"Gather"}) < 0.05:
        out.append({"finding": f"the embedding Gather holds {gather_weight:.0%} of the weights but "
                               f"{_share(by_type, {'Gather'}):.1%} of the time",
                    "action": "weight-only int8 (or int8 embeddings) shrinks the file at no speed cost"})
    unfused = {t for t in by_type if t in UNFUSED_SIGNS} | ({"Erf"} if any(n.op_type == "Erf" for n in static.nodes) else set())
    unfused_share = _share(by_type, UNFUSED_SIGNS | {"Add", "Mul", "Div", "Sub"})
    if "Erf" in unfused or ("ReduceMean" in unfused and "Pow" in unfused):
        out.append({"finding": f"LayerNorm/GELU/attention run as separate element-wise nodes ({unfused_share:.0%} "
                               "of the time)",
                    "action": "run onnxruntime's transformer optimiser (edgekit optimize does) to fuse them"})
    layout = _share(by_type, {"Transpose", "Reshape"})
    if layout > 0.15:
        out.append({"finding": f"Transpose/Reshape take {layout:.0%} of the time",
                    "action": "a layout problem: try a channels-last export, or fold the transposes"})
    if estimate:
        memory_ms = sum(r["estimate_ms"] for r in estimate["nodes"] if r["bound"] == "memory")
        # the per-op roofline's own total: the fitted device model's total is on another scale
        # (fusion, overheads), and dividing one by the other printed shares like 1674%
        total = sum(r["estimate_ms"] for r in estimate["nodes"]) or 1e-9
        if memory_ms / total > 0.5:
            out.append({"finding": f"{memory_ms / total:.0%} of the estimated time on {target.id} is memory-bound",
                        "action": "lower precision cuts the bytes moved: fp16 halves them, int8 weights quarter them"})
    if not out:
        out.append({"finding": "no single op type dominates", "action": "optimise end to end: edgekit optimize"})
    return out
