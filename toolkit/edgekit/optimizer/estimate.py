"""Target latency from a host measurement when no per-op estimate is possible: peak scaling.

The optimizer prefers the profile command's per-op roofline (edgekit.profile.roofline); this
simpler scaling is the fallback for sources without an ONNX graph (a TFLite-only model).

time_target = max(time_host x host_peak / target_peak, weight_bytes / target_bandwidth), with the
peak of the precision the candidate computes in. It assumes the op mix is as efficient on the
target as on the host; the profile command refines this per op class.
"""

from __future__ import annotations

from ..devices.profile import Profile

ASSUMPTION = ("estimate: where the target profile has a fitted device model (edgekit.profile.fitted), that "
              "model's latency for the candidate's compute precision, scaled among candidates of one precision "
              "by their host timings, and never faster against fp32 than this host measured once the two "
              "machines' peak ratios of that precision to fp32 are allowed for; otherwise the candidate's host latency scaled by target/host latency of the "
              "per-op roofline "
              "(edgekit profile: FLOPs and bytes per op against each device's peaks and bandwidth, divided "
              "by this host's measured efficiency per op class); without an ONNX graph, by the ratio of peak "
              "rates for the compute precision, floored by the time to stream the weights")


def compute_precision(precision: str, fmt: str, target: Profile) -> str:
    """What the candidate computes in on ``target``: fp16 weights run as fp32 without fp16 units."""
    if precision in ("int8-dynamic", "int8-static"):
        return "int8"
    if precision == "fp16":
        if fmt == "tflite" and not target.gpu_fp16:
            # XNNPACK computes in fp16 only when the model carries "reduced_precision_support"
            # metadata (TFLite's xnnpack/README); fp16-weight files from the converters do not, so
            # their weights are unpacked to fp32 at load, even on a Cortex-A76 with fp16 units (a
            # depthwise-heavy CNN on a Pi 5 was estimated 3.3x too fast as fp16 compute)
            return "fp32"
        return "fp16" if target.cpu.fp16_arithmetic or target.gpu_fp16 else "fp32"
    return "fp32"  # fp32, and int8 weight-only (dequantised to float)


def peak(profile: Profile, kind: str) -> float:
    est = profile.estimator
    return {"int8": est.peak_gops_int8, "fp16": est.peak_gflops_fp16, "fp32": est.peak_gflops_fp32}[kind]


def estimate_ms(host_ms: float, precision: str, fmt: str, host: Profile, target: Profile, weight_bytes: int) -> float:
    host_kind = compute_precision(precision, fmt, host)
    target_kind = compute_precision(precision, fmt, target)
    compute = host_ms * peak(host, host_kind) / peak(target, target_kind)
    memory = weight_bytes / (target.memory.bandwidth_gbs * 1e9) * 1000.0
    return max(compute, memory)
