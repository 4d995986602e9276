"""Target latency from a device model fitted to measurements on that device.

The roofline alone is 1.5-3x off on real boards: small and depthwise convolutions run far below
peak on a Cortex-A72, every kernel has a fixed dispatch cost, threads do not scale linearly, and
the Edge TPU keeps its parameters in 8 MB on chip. This model keeps the roofline and adds those
effects, with a handful of parameters per device fitted to published latencies
(benchmarks/fit_profiles.py) or to microbenchmarks run on the device itself (`edgekit calibrate`):

    kernel time = max(FLOPs / (peak per core x speed-up(threads) x efficiency(kind, size) x precision),
                      bytes / (bandwidth x memory efficiency)) + overhead + sync x (threads - 1)
    + per inference: the runtime call's fixed cost
    efficiency(kind, size) = efficiency(kind) x work / (work + half_mflops), work = MFLOPs per thread
                             x depth / (depth + half_depth), depth = multiply-adds per output
    speed-up(n) = 1 / ((1 - parallel) + parallel / n)                      (Amdahl)
    n = threads, or fewer for a kernel with less than thread_mflops of work per thread
    FLOPs of a dense convolution counted on its output channels rounded up to the SIMD width
    + for an accelerator with on-chip parameter memory: weights beyond it streamed per inference

Normalisations take their own efficiency where one is fitted. half_depth, thread_mflops and
normalization are 0 (off) unless fitted: `edgekit calibrate` fits them from its microbenchmarks.
Kernels are the graph's nodes after the fusions every edge runtime does (an activation or a
batch norm folded into the convolution before it); reshapes are views and cost nothing. Everything here is numpy-free arithmetic over
edgekit.profile.static's node statistics, so it runs on a device too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Optional

from ..devices.profile import DeviceFit, Profile
from .roofline import peak
from .static import StaticProfile

# Shape arithmetic, and reshapes that every runtime does as a view of the same buffer (measured:
# a Reshape in the digits CNN adds nothing to its 13 us on onnxruntime)
FREE_OPS = frozenset({"Constant", "Shape", "ConstantOfShape", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})
# Normalisations have their own efficiency where fitted: onnxruntime 1.32 fuses a residual Add and
# the LayerNormalization after it into SkipLayerNormalization, which runs ~10x slower per value
# than the plain LayerNormalization here (0.79 vs 0.08 ms for four at 128x384, one thread)
NORMALIZATION = frozenset({"LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
                           "SkipSimplifiedLayerNormalization", "GroupNormalization", "InstanceNormalization"})
KINDS = ("conv", "depthwise", "gemm")  # compute kernels with their own efficiency; the rest is memory
FUSED_INTO_PRODUCER = {"Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "BatchNormalization",
                       "PRelu", "Identity", "Dropout"}
# Bounds for fitting: efficiencies are shares of the direct-convolution peak, and may exceed 1 where
# a runtime computes 3x3 convolutions with Winograd (ncnn's F(6,3): up to 5x fewer multiplies);
# ``memory`` is a share of the profile's DRAM bandwidth and may exceed 1 where working sets stay in
# the caches (a 256 KB tensor on a 32 MB L3); the rest are physically plausible ranges.
BOUNDS = {"conv": (0.01, 6.0), "depthwise": (0.002, 6.0), "gemm": (0.01, 6.0), "memory": (0.02, 20.0),
          "elementwise": (0.001, 4.0), "normalization": (0.001, 4.0), "dram": (0.01, 4.0), "half_mflops": (0.001, 500.0),
          "overhead_us": (0.05, 2000.0), "sync_us": (0.01, 500.0), "call_us": (0.01, 5000.0),
          "parallel": (0.01, 0.999), "int8_speedup": (0.1, 4.0), "fp16_speedup": (0.1, 4.0),
          "offchip_gbs": (0.01, 100.0), "half_depth": (0.5, 2000.0), "thread_mflops": (0.001, 100.0)}
WEIGHT_SCALE = {"int8": 0.25, "fp16": 0.5}  # bytes per fp32 weight byte in each precision


@dataclass(frozen=True)
class Kernel:
    """One kernel as a runtime executes it: a node with the nodes fused into it."""

    name: str
    kind: str  # conv, depthwise, gemm or memory
    flops: float
    weight_bytes: float
    activation_bytes: float  # read and written, weights excluded
    members: tuple[str, ...] = field(default=())
    depth: float = 0.0  # multiply-adds per output value (a GEMM's K: c_in x kh x kw for a convolution)
    channels: int = 0  # a dense convolution's output channels
    op: str = ""  # the head node's operator


def _depth(node) -> float:
    outputs = math.prod(d for d in node.output_shape if isinstance(d, int) and d > 0) if node.output_shape else 0
    return node.macs / outputs if node.macs and outputs else 0.0


def _kind(node) -> str:
    if node.op_type in ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose"):
        return "depthwise" if node.groups > 1 and node.groups == node.out_channels else "conv"
    if node.macs:
        return "gemm"
    return "memory"


def kernels(static: StaticProfile) -> list[Kernel]:
    """Nodes grouped into the kernels an edge runtime runs: activations, batch norms and bias
    adds with a single producer that is a compute kernel are fused into it (XNNPACK, ncnn,
    TensorRT and onnxruntime all do); shape-only nodes (Shape, Constant...) cost nothing."""
    producer_of = {}
    for node in static.nodes:
        for out in node.outputs:
            producer_of[out] = node
    consumers: dict[str, int] = {}
    for node in static.nodes:
        for name in node.inputs:
            consumers[name] = consumers.get(name, 0) + 1
    merged: dict[str, dict] = {}
    order: list[str] = []
    owner: dict[str, str] = {}  # node name -> the kernel it belongs to
    for node in static.nodes:
        if node.op_type in FREE_OPS and not node.flops:
            continue
        data_inputs = [i for i in node.inputs if i in producer_of]
        if node.op_type in FUSED_INTO_PRODUCER and len(data_inputs) == 1:
            head = owner.get(producer_of[data_inputs[0]].name)
            if head and merged[head]["kind"] != "memory" and consumers.get(data_inputs[0], 0) == 1:
                k = merged[head]
                k["flops"] += node.flops  # its activations stay in registers: no extra traffic
                k["members"].append(node.name)
                owner[node.name] = head
                continue
        weights = float(node.weight_bytes)
        if node.op_type == "Gather" and not node.macs:  # an embedding lookup reads rows, not the table
            weights = float(node.bytes_written)
        merged[node.name] = {"kind": _kind(node), "flops": float(node.flops), "weight_bytes": weights,
                             "activation_bytes": float(max(node.bytes_read + node.bytes_written - node.weight_bytes,
                                                           0)),
                             "members": [node.name], "depth": _depth(node),
                             "channels": node.out_channels if _kind(node) == "conv" else 0, "op": node.op_type}
        owner[node.name] = node.name
        order.append(node.name)
    return [Kernel(name, m["kind"], m["flops"], m["weight_bytes"], m["activation_bytes"], tuple(m["members"]),
                   m["depth"], m["channels"], m["op"])
            for name, m in ((n, merged[n]) for n in order)]


def default_threads(profile: Profile, fit: DeviceFit) -> int:
    if not fit.threads_apply:
        return 1
    return min(fit.best_threads or profile.cpu.cores, profile.cpu.cores)


def _amdahl(parallel: float, n: int) -> float:
    return 1.0 / ((1.0 - parallel) + parallel / n)


def kernel_ms(kernel: Kernel, profile: Profile, fit: DeviceFit, precision: str = "fp32",
              threads: Optional[int] = None, streamed: bool = False) -> float:
    """One kernel's time; ``streamed``: the model's weights exceed the cache, so this kernel's
    come from DRAM on every inference, and that transfer is not hidden behind the arithmetic
    (a packed GEMM waits for its panels)."""
    n = max(1, threads or default_threads(profile, fit)) if fit.threads_apply else 1
    cores = profile.cpu.cores if fit.threads_apply else 1
    n = min(n, cores)
    if fit.thread_mflops and n > 1:
        # runtimes split a kernel only where each thread gets enough work (MLAS, XNNPACK and ncnn
        # all do): a tiny kernel runs on one thread however many the session has
        work = max(kernel.flops, kernel.activation_bytes / 4) / 1e6
        n = min(n, max(1.0, work / fit.thread_mflops))
    speedup = _amdahl(fit.parallel, n)
    weights = kernel.weight_bytes
    activations = kernel.activation_bytes
    if precision == "fp16":
        weights, activations = weights / 2, activations / 2
    elif precision == "int8" and kernel.kind != "memory":
        weights, activations = weights / 4, activations / 2
    if fit.onchip_mb:  # parameters and activations stay on the accelerator's chip (Edge TPU);
        weights = activations = 0.0  # parameters beyond its memory are charged per model
    # One thread draws its share of the bandwidth: the full figure takes every core (a single
    # core cannot saturate the memory system on any of these devices).
    share = speedup / _amdahl(fit.parallel, cores)
    bandwidth = profile.memory.bandwidth_gbs * 1e9 * share
    stream_s = weights / (bandwidth * fit.dram) if streamed else 0.0
    memory_s = (activations + (0.0 if streamed else weights)) / (bandwidth * fit.memory)
    compute_s = 0.0
    flops = kernel.flops
    if kernel.channels:
        # output channels are computed a SIMD register at a time: 8 channels on 16 lanes cost 16
        lanes = profile.cpu.fp32_lanes
        flops *= math.ceil(kernel.channels / lanes) * lanes / kernel.channels
    if kernel.flops:
        if kernel.kind == "memory":
            # element-wise, normalisation and transcendental arithmetic: scalar-ish code, far
            # from the matmul peak (LayerNorm, Softmax and Erf are compute-bound on a CPU)
            efficiency = fit.normalization if fit.normalization and kernel.op in NORMALIZATION else fit.elementwise
            rate = profile.estimator.peak_gflops_fp32 / cores * speedup * efficiency * 1e9
        else:
            per_thread_mflops = flops / n / 1e6
            size = per_thread_mflops / (per_thread_mflops + fit.half_mflops)
            if fit.half_depth and kernel.depth:
                # a short reduction (a stem convolution over 3 channels: 27 multiply-adds per output)
                # leaves the GEMM micro-kernel's accumulators mostly idle, whatever the kernel's size
                size *= kernel.depth / (kernel.depth + fit.half_depth)
            factor = fit.int8_speedup if precision == "int8" else fit.fp16_speedup if precision == "fp16" else 1.0
            rate = peak(profile, precision, "matmul/conv") / cores * speedup * getattr(fit, kernel.kind) \
                * size * factor * 1e9
        compute_s = flops / rate
    return (max(compute_s, memory_s) + stream_s + (fit.overhead_us + fit.sync_us * (n - 1)) * 1e-6) * 1000.0


def _model_weight_bytes(static: StaticProfile, precision: str) -> float:
    return sum(n.weight_bytes for n in static.nodes) * WEIGHT_SCALE.get(precision, 1.0)


def offchip_ms(static: StaticProfile, fit: DeviceFit, precision: str) -> float:
    """Per inference: parameters beyond the accelerator's on-chip memory, streamed in."""
    if not fit.onchip_mb:
        return 0.0
    beyond = max(0.0, _model_weight_bytes(static, precision) - fit.onchip_mb * 1e6)
    return beyond / (fit.offchip_gbs * 1e9) * 1000.0


def streams_weights(static: StaticProfile, fit: DeviceFit, precision: str) -> bool:
    """Whether the model's weights in ``precision`` exceed the device's last-level cache."""
    if not fit.cache_mb or fit.onchip_mb:
        return False
    return _model_weight_bytes(static, precision) > fit.cache_mb * 1e6


def total_ms(ks: Iterable[Kernel], static: StaticProfile, profile: Profile, fit: DeviceFit, precision: str,
             threads: Optional[int] = None) -> float:
    streamed = streams_weights(static, fit, precision)
    return (sum(kernel_ms(k, profile, fit, precision, threads, streamed) for k in ks)
            + offchip_ms(static, fit, precision) + fit.call_us / 1000.0)


def estimate(static: StaticProfile, profile: Profile, fit: DeviceFit) -> dict:
    """The fitted estimate per precision, for one thread and for all the device's cores."""
    ks = kernels(static)
    cores = default_threads(profile, fit)
    threads = sorted({1, cores}) if fit.threads_apply else [1]
    by_threads = {str(n): {p: total_ms(ks, static, profile, fit, p, n) for p in ("fp32", "fp16", "int8")}
                  for n in threads}
    streamed = streams_weights(static, fit, "fp32")
    rows = [{"kernel": k.name, "kind": k.kind, "fused": list(k.members[1:]),
             "estimate_ms": kernel_ms(k, profile, fit, "fp32", cores, streamed)} for k in ks]
    return {"total_ms": by_threads[str(cores)], "by_threads": by_threads, "threads": cores, "kernels": rows,
            "basis": basis(fit)}


def describe(basis: dict) -> str:
    """One line for reports: where the estimate's numbers come from and how far off to expect it."""
    if basis.get("basis") in ("published", "calibrated"):
        err = basis.get("expected_error") or 0
        return (f"{basis['basis']} device model fitted on {basis['fitted_on']} ({basis['fitted_at']}); validated on "
                f"{basis['validated_on']}: {basis['within_1_5x']} within 1.5x, typical error {err:.2f}x")
    return basis.get("method", "")


def with_fit(roofline: dict, static: StaticProfile, profile: Profile) -> dict:
    """The roofline estimate, with the totals replaced by the device model's where the profile
    has one (the roofline's per-op rows stay: they say which ops are compute- or memory-bound)."""
    fit = profile.estimator.fit
    if fit is None:
        return roofline | {"basis": {"method": "roofline scaled by this host's measured efficiency per op class "
                                               "(no fitted device model in this profile: run edgekit calibrate)",
                                     "basis": "host-scaled"}}
    fitted = estimate(static, profile, fit)
    return roofline | {"roofline_total_ms": roofline["total_ms"], "total_ms": fitted["total_ms"],
                       "by_threads": fitted["by_threads"], "threads": fitted["threads"], "basis": fitted["basis"],
                       "assumptions": [describe(fitted["basis"]), *roofline["assumptions"][:1]]}


def basis(fit: DeviceFit) -> dict:
    return {"method": "fitted device model (edgekit.profile.fitted)", "basis": fit.basis, "fitted_on": fit.fitted_on,
            "validated_on": fit.validated_on, "fitted_at": fit.fitted_at, "expected_error": fit.expected_error,
            "within_1_5x": fit.within_1_5x}


# ---- fitting --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Observation:
    """A measured latency of a known graph on the device: a published row or a microbenchmark."""

    label: str
    static: StaticProfile
    precision: str  # fp32, fp16, int8
    threads: int
    ms: float


def ratio(obs: Observation, profile: Profile, fit: DeviceFit, ks: Optional[list[Kernel]] = None) -> float:
    est = total_ms(ks if ks is not None else kernels(obs.static), obs.static, profile, fit, obs.precision, obs.threads)
    return est / obs.ms


def fit_device(observations: list[Observation], profile: Profile, start: DeviceFit,
               free: tuple[str, ...], tie: tuple[str, ...] = ()) -> DeviceFit:
    """Least squares on log(estimate / measured) over ``free`` parameters (in log space: all
    positive), from ``start``; scipy's trust-region reflective solver within BOUNDS. ``tie``
    names efficiencies that follow the first free one (an accelerator with one engine for all
    kernel kinds), so that few rows fit few parameters."""
    import numpy as np
    from scipy.optimize import least_squares

    cached = [(o, kernels(o.static)) for o in observations]

    def unpack(x):
        values = {name: math.exp(v) for name, v in zip(free, x)}
        values.update({name: values[free[0]] for name in tie})
        return start.with_values(values)

    def residuals(x):
        fit = unpack(x)
        return np.array([math.log(ratio(o, profile, fit, ks)) for o, ks in cached])

    lower = [math.log(BOUNDS[n][0]) for n in free]
    upper = [math.log(BOUNDS[n][1]) for n in free]
    best = None
    # Several starts (efficiencies as given, three times higher, three times lower): the
    # parameters trade off against each other, and one start can stop in a poor local minimum.
    for scale in (1.0, 3.0, 1 / 3):
        x0 = [math.log(min(max(getattr(start, n) * (scale if n in KINDS + ("memory", "elementwise") else 1.0),
                               BOUNDS[n][0] * 1.01), BOUNDS[n][1] * 0.99)) for n in free]
        result = least_squares(residuals, x0, bounds=(lower, upper), x_scale=1.0, loss="soft_l1", f_scale=0.2)
        if best is None or result.cost < best.cost:
            best = result
    return unpack(best.x)


def score(observations: list[Observation], profile: Profile, fit: DeviceFit) -> dict:
    ratios = [ratio(o, profile, fit) for o in observations]
    worst = [max(r, 1 / r) for r in ratios]
    within = sum(w <= 1.5 for w in worst)
    geo = math.exp(sum(math.log(w) for w in worst) / len(worst)) if worst else 0.0
    return {"ratios": ratios, "within_1_5x": within, "rows": len(ratios), "geomean_error": geo,
            "worst": max(worst) if worst else 0.0}
