"""Roofline classification and target latency estimates, calibrated on the host.

Per op: roofline time = max(FLOPs / peak, bytes / bandwidth). The host's efficiency per op
class is its roofline time over its measured time; an op's estimate on the target is the
target's roofline time divided by that efficiency. Precisions change the peak (fp16, int8 for
matmul/conv only: the rest stays float) and the bytes moved.
"""

from __future__ import annotations

from ..devices.profile import Profile
from .static import StaticProfile

ASSUMPTIONS = [
    "roofline per op: max(FLOPs / peak, bytes / bandwidth), summed over ops in graph order",
    "efficiency per op class (matmul/conv, normalisation, elementwise, data movement, "
    "reduction/pooling) measured on this host and assumed to carry over to the target",
    "fp16: half the bytes, the target's fp16 peak; int8: matmul/conv at the int8 peak with "
    "weights at a quarter and activations at half the bytes; other ops stay fp32",
    "peaks and bandwidth are the profile's (see 'edgekit targets show'); no thermal throttling",
]
MIN_EFFICIENCY, MAX_EFFICIENCY = 0.01, 1.0


def peak(profile: Profile, precision: str, op_class: str) -> float:
    """The profile's peak rate for ``precision``: int8 only for matmul/conv, the rest stays float."""
    est = profile.estimator
    if precision == "int8" and op_class == "matmul/conv":
        return est.peak_gops_int8
    if precision == "fp16":
        return est.peak_gflops_fp16
    return est.peak_gflops_fp32


def _bytes(node, precision: str) -> float:
    activations = node.bytes_read + node.bytes_written - node.weight_bytes
    if precision == "fp16":
        return (activations + node.weight_bytes) / 2
    if precision == "int8" and node.op_class == "matmul/conv":
        return activations / 2 + node.weight_bytes / 4
    return activations + node.weight_bytes


def roofline_ms(node, profile: Profile, precision: str = "fp32") -> float:
    compute = node.flops / (peak(profile, precision, node.op_class) * 1e9)
    memory = _bytes(node, precision) / (profile.memory.bandwidth_gbs * 1e9)
    return max(compute, memory) * 1000


def bound(node, profile: Profile, precision: str = "fp32") -> str:
    ridge = peak(profile, precision, node.op_class) / profile.memory.bandwidth_gbs
    traffic = _bytes(node, precision)
    intensity = node.flops / traffic if traffic else 0.0
    return "compute" if intensity >= ridge else "memory"


def host_efficiency(static: StaticProfile, measured_us: dict[str, float], host: Profile) -> dict[str, dict]:
    """Per op class: host roofline time over measured time, from node-level joins."""
    classes: dict[str, dict] = {}
    for node in static.nodes:
        if node.name not in measured_us:
            continue
        row = classes.setdefault(node.op_class, {"roofline_ms": 0.0, "measured_ms": 0.0, "nodes": 0})
        row["roofline_ms"] += roofline_ms(node, host)
        row["measured_ms"] += measured_us[node.name] / 1000
        row["nodes"] += 1
    for row in classes.values():
        eff = row["roofline_ms"] / row["measured_ms"] if row["measured_ms"] else 0.0
        row["efficiency"] = min(max(eff, MIN_EFFICIENCY), MAX_EFFICIENCY)
    return classes


def estimate(static: StaticProfile, target: Profile, efficiency: dict[str, dict]) -> dict:
    """Estimated latency per precision on ``target``, with per-op rows for fp32."""
    known = sorted(row["efficiency"] for row in efficiency.values())
    fallback = known[len(known) // 2] if known else 0.3
    totals = {}
    rows = []
    for precision in ("fp32", "fp16", "int8"):
        total = 0.0
        for node in static.nodes:
            eff = efficiency.get(node.op_class, {}).get("efficiency", fallback)
            ms = roofline_ms(node, target, precision) / eff
            total += ms
            if precision == "fp32":
                rows.append({"name": node.name, "op_type": node.op_type, "op_class": node.op_class,
                             "estimate_ms": ms, "bound": bound(node, target), "intensity": node.intensity})
        totals[precision] = total
    return {"target": target.id, "total_ms": totals, "nodes": rows,
            "ridge_point_fp32": target.ridge_point_fp32, "assumptions": ASSUMPTIONS}
