"""Did int8 pay on this host, and if not, why: measured evidence, not a shrug.

Int8 is expected to run a CNN or a transformer at least ``GOAL`` times faster than onnxruntime's
fp32 on a CPU. When the fastest passing int8 candidate falls short in the interleaved timing, the
report names the causes that the measurements show:

- the CPU's int8 peak: without a fused int8 dot product (x86 VNNI/AMX, ARM sdot) an int8
  multiply-add is a chain of three instructions, and int8's peak is only ~2x fp32's;
- Amdahl: the share of fp32's time in the ops int8 speeds up (Conv, MatMul, Gemm), from
  onnxruntime's per-op profile, bounds the whole model's speed-up below that peak;
- conversions: the share of the int8 model's time spent quantising and dequantising between
  layers (QuantizeLinear, DynamicQuantizeLinear, DequantizeLinear, Cast), which a small layer
  cannot amortise;
- size: a model whose fp32 run takes well under a millisecond is dominated by per-op fixed
  costs that no precision changes.
"""

from __future__ import annotations

from typing import Optional

GOAL = 1.5
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "FusedConv", "FusedMatMul", "FusedGemm", "LSTM",
                         "Attention"})  # what onnxruntime quantises (a GRU it leaves in float)
CONVERSION_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast"})
INT8 = ("int8-dynamic", "int8-static")
SMALL_MS = 0.3  # fp32 runs shorter than this are dominated by per-op fixed costs


def _fastest(outcomes, precisions: tuple[str, ...], fmt: Optional[str] = None):
    timed = [o for o in outcomes if o.status == "passed" and o.latency.get("p50_ms")
             and o.candidate.precision in precisions and (fmt is None or o.candidate.format == fmt)]
    return min(timed, key=lambda o: o.latency["p50_ms"], default=None)


def _share(profile: dict, ops: frozenset) -> float:
    return sum(row["share"] for op, row in profile["by_op_type"].items() if op in ops)


def judge(outcomes, host, feeds: dict, threads: int) -> Optional[dict]:
    """The fastest int8 candidate's speed-up on this host against onnxruntime fp32 (else its own
    format's fp32) and against its own format's fp32 (what int8 itself brings, apart from the
    runtime); where the latter is under ``GOAL``, the reasons. None where no int8 and fp32 pair
    was timed."""
    int8 = _fastest(outcomes, INT8)
    own = int8 and _fastest(outcomes, ("fp32",), int8.candidate.format)
    base = _fastest(outcomes, ("fp32",), "onnx") or own
    if int8 is None or base is None:
        return None
    ms = int8.latency["p50_ms"]
    row = {"int8": int8.candidate.id, "baseline": base.candidate.id, "speedup": round(base.latency["p50_ms"] / ms, 2),
           "own_baseline": own.candidate.id if own else None,
           "own_speedup": round(own.latency["p50_ms"] / ms, 2) if own else None, "goal": GOAL, "reasons": []}
    if min(row["speedup"], row["own_speedup"] or row["speedup"]) >= GOAL:
        return row
    row["reasons"] = _reasons(row, outcomes, host, feeds, threads)
    return row


def _reasons(row: dict, outcomes, host, feeds: dict, threads: int) -> list[str]:
    reasons = []
    est = host.estimator
    peak = est.peak_gops_int8 / est.peak_gflops_fp32
    if not host.cpu.int8_dot_product:
        reasons.append(f"this CPU has no fused int8 dot product (VNNI, AMX or sdot): int8's peak is {peak:.0f}x "
                       "fp32's here, against 4x on a CPU with one")
    onnx_fp32, onnx_int8 = _fastest(outcomes, ("fp32",), "onnx"), _fastest(outcomes, INT8, "onnx")
    fp32_prof = onnx_fp32 and _profile(onnx_fp32, feeds, threads)
    if fp32_prof:
        share = _share(fp32_prof, COMPUTE_OPS)
        bound = 1.0 / ((1.0 - share) + share / peak)
        row["fp32_compute_share"] = round(share, 3)
        if bound < GOAL * 1.2:
            reasons.append(f"{share:.0%} of fp32's time is in the ops int8 speeds up (Conv, MatMul, Gemm); at "
                           f"{peak:.0f}x on those, the whole model can gain at most {bound:.2f}x")
    int8_prof = onnx_int8 and _profile(onnx_int8, feeds, threads)
    if int8_prof:
        share = _share(int8_prof, CONVERSION_OPS)
        nodes = sum(r["nodes"] for op, r in int8_prof["by_op_type"].items() if op in CONVERSION_OPS)
        row["int8_conversion_share"] = round(share, 3)
        if share >= 0.15:
            reasons.append(f"{share:.0%} of {onnx_int8.candidate.id}'s time converts between float and int8 "
                           f"({nodes} quantise/dequantise/cast nodes): its layers are too small to amortise that")
    fp32_ms = (onnx_fp32 or _fastest(outcomes, ("fp32",))).latency["p50_ms"]
    if fp32_ms < SMALL_MS:
        reasons.append(f"fp32 runs in {fp32_ms:.3f} ms: per-op fixed costs (dispatch, memory allocation), "
                       "which no precision changes, are a large share of that")
    if not reasons:
        reasons.append("none of the usual causes shows in the measurements (int8 peak, compute share, "
                       "conversions, size); profile both with `edgekit profile` to see where the time goes")
    return reasons


def _profile(outcome, feeds: dict, threads: int) -> Optional[dict]:
    """onnxruntime's per-op profile of an ONNX candidate (a fused graph, as it runs); None for
    another format (LiteRT's Python interpreter has no per-op profiler) or if profiling fails."""
    if outcome.candidate.format != "onnx":
        return None
    from ..profile.dynamic import profile_onnx

    try:
        return profile_onnx(outcome.path, feeds, runs=10, warmup=3, threads=threads)
    except Exception:  # the profile is evidence for a note, never a reason to fail the run
        return None


def text(row: dict) -> str:
    """One report note."""
    head = f"int8 on this host: {row['int8']} runs {row['speedup']:.2f}x as fast as {row['baseline']}"
    if row["own_baseline"] and row["own_baseline"] != row["baseline"]:
        head += f" and {row['own_speedup']:.2f}x as fast as {row['own_baseline']}"
    head += " (measured side by side)"
    if not row["reasons"]:
        return head
    return f"{head}; int8 itself gains less than the {row['goal']}x expected of it, because " + "; ".join(row["reasons"])
