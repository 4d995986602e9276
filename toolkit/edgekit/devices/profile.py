"""The target-device profile schema: what edgekit knows about a device, as frozen data.

Profiles are TOML files in ``profiles/`` (shipped inside the wheel as ``edgekit.profiles``); this
module only describes and checks their shape. No device fact lives in code.
"""

from __future__ import annotations

from typing import Literal, Optional

from .._schema import Document, field, replace, to_dict
from ..names import check_name

# Runtimes edgekit knows how to produce artifacts for and run, in the vocabulary of profiles.
RUNTIMES = (
    "litert-xnnpack",  # LiteRT (TFLite) with the XNNPACK CPU delegate
    "litert-gpu",  # LiteRT GPU delegate (Android, some Linux boards)
    "onnxruntime-cpu",
    "onnxruntime-cuda",
    "onnxruntime-tensorrt",
    "edgetpu",  # Coral: full-integer TFLite compiled with edgetpu_compiler
)
# The concrete precisions edgekit builds; a profile may also say just "int8" (any of the int8s).
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static", "int8-weight-only")
PROFILE_PRECISIONS = PRECISIONS + ("int8",)
Arch = Literal["aarch64", "armv7l", "x86_64"]

# What /proc/cpuinfo flags mean for inference, in one place (every module asks the profile).
INT8_DOT_PRODUCT_FLAGS = frozenset({"asimddp", "avx512_vnni", "avx_vnni"})  # sdot / vpdpbusd
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
FP16_ARITHMETIC_FLAGS = frozenset({"asimdhp", "avx512_fp16"})


class Cpu(Document):
    core: str
    cores: int
    max_ghz: float
    isa: tuple[str, ...] = ()  # /proc/cpuinfo flag names: asimd, asimddp, asimdhp, avx2, avx512_vnni

    def validate(self) -> None:
        if self.cores < 1:
            raise ValueError(f"cores must be at least 1, got {self.cores}")
        if self.max_ghz <= 0:
            raise ValueError(f"max_ghz must be positive, got {self.max_ghz}")

    def has(self, flag: str) -> bool:
        return flag in self.isa

    @property
    def int8_dot_product(self) -> bool:
        """A fused int8 multiply-accumulate (ARM sdot, x86 VNNI): int8 is much faster than fp32."""
        return bool(INT8_DOT_PRODUCT_FLAGS.intersection(self.isa))

    @property
    def fp32_lanes(self) -> int:
        """fp32 values per SIMD register: convolution kernels block output channels by it."""
        if "avx512f" in self.isa:
            return 16
        if "avx2" in self.isa or "avx" in self.isa:
            return 8
        return 4  # NEON (asimd), SSE

    @property
    def vnni(self) -> bool:
        return bool(VNNI_FLAGS.intersection(self.isa))

    @property
    def fp16_arithmetic(self) -> bool:
        """fp16 computed natively (ARMv8.2 FP16, AVX512-FP16), not widened to fp32."""
        return bool(FP16_ARITHMETIC_FLAGS.intersection(self.isa))


class Memory(Document):
    ram_mb: int
    bandwidth_gbs: float

    def validate(self) -> None:
        if self.ram_mb <= 0 or self.bandwidth_gbs <= 0:
            raise ValueError("ram_mb and bandwidth_gbs must be positive")


class Accelerator(Document):
    kind: Literal["gpu", "npu", "tpu", "dsp"]
    name: str
    dtypes: tuple[str, ...]
    tops: Optional[float] = None  # peak tera-operations per second in its best dtype, as published


class Constraints(Document):
    full_int8_required: bool = False  # e.g. the Edge TPU runs nothing else
    static_shapes: bool = False  # every tensor shape fixed at compile time
    max_rank: Optional[int] = None  # Edge TPU: at most 3 dimensions larger than one
    max_model_mb: Optional[float] = None
    latency_budget_ms: Optional[float] = None


class DeviceFit(Document):
    """A device's fitted efficiency parameters, with where they came from (``[estimator.fit]``)."""

    conv: float = 0.5  # share of the per-core peak that large dense convolutions reach
    depthwise: float = 0.15
    gemm: float = 0.5
    memory: float = 0.5  # share of the memory bandwidth that memory-bound kernels reach on every core
    elementwise: float = 0.5  # share of the peak that element-wise and normalisation arithmetic reaches
    normalization: float = 0.0  # the same for normalisations (LayerNorm...) where it differs (0: as elementwise)
    half_mflops: float = 1.0  # a kernel with this many MFLOPs per thread reaches half its kind's efficiency
    thread_mflops: float = 0.0  # work a runtime gives each extra thread at least: smaller kernels use fewer (0: off)
    half_depth: float = 0.0  # a conv/GEMM with this many multiply-adds per output reaches half its efficiency (0: off)
    overhead_us: float = 10.0  # fixed cost per kernel: dispatch
    sync_us: float = 0.0  # extra cost per kernel per additional thread: waking and joining the pool
    call_us: float = 0.0  # fixed cost per inference: the runtime call, binding inputs, allocating outputs
    parallel: float = 0.9  # Amdahl: share of a kernel's work that scales with threads
    int8_speedup: float = 1.0  # int8 conv/gemm rate over the profile's int8 peak (1 = peak ratio holds)
    fp16_speedup: float = 1.0
    cache_mb: float = 0.0  # last-level cache: a model whose weights exceed it streams them from DRAM (0: not modelled)
    dram: float = 0.5  # share of the bandwidth that streaming weights reaches, on every core
    onchip_mb: float = 0.0  # parameters an accelerator keeps on chip (Edge TPU: 8 MB); 0 = none
    offchip_gbs: float = 1.0  # how fast the rest is streamed in, per inference
    threads_apply: bool = True  # False for accelerators: one engine, no CPU threads
    # Provenance, shown in reports: which rows or microbenchmarks, when, and the held-out error.
    basis: str = "defaults"  # "published", "calibrated", "defaults"
    fitted_on: str = ""
    validated_on: str = ""
    fitted_at: str = ""
    expected_error: float = 0.0  # geometric mean of max(ratio, 1/ratio) on held-out rows
    within_1_5x: str = ""  # e.g. "12 of 13 held-out rows"
    best_threads: int = 0  # threads the estimate assumes; 0 = every core (a phone: its big cores)

    def with_values(self, values: dict) -> "DeviceFit":
        return replace(self, **{k: float(v) for k, v in values.items()})

    def to_toml(self) -> str:
        lines = []
        for key, value in to_dict(self).items():
            if isinstance(value, (bool, int)):
                lines.append(f"{key} = {str(value).lower()}")
            elif isinstance(value, float):
                lines.append(f"{key} = {value:.4g}")
            else:
                lines.append(f"{key} = {_toml_str(value)}")
        return "\n".join(lines)


def _toml_str(value: str) -> str:
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\t", "\\t") + '"'


class Estimator(Document):
    """Peak arithmetic rates for roofline latency estimates (derivations in each file), and the
    device model fitted to measurements on the device (edgekit.profile.fitted), where there is one."""

    peak_gflops_fp32: float
    peak_gflops_fp16: float
    peak_gops_int8: float
    fit: Optional[DeviceFit] = None

    def validate(self) -> None:
        if min(self.peak_gflops_fp32, self.peak_gflops_fp16, self.peak_gops_int8) <= 0:
            raise ValueError("estimator peaks must be positive")


class Source(Document):
    what: str
    ref: str


class Profile(Document):
    id: str
    name: str
    arch: Arch
    cpu: Cpu
    memory: Memory
    runtimes: tuple[str, ...]
    precisions: tuple[str, ...]
    estimator: Estimator
    sources: tuple[Source, ...]
    aliases: tuple[str, ...] = ()
    accelerators: tuple[Accelerator, ...] = ()
    constraints: Constraints = field(default_factory=Constraints)
    notes: str = ""
    path: str = ""  # where the profile was read from; filled by the registry, not the file

    def validate(self) -> None:
        check_name(self.id, "id", "raspberrypi5, pi5-lab")  # it names output folders: never a path
        for runtime in self.runtimes:
            if runtime not in RUNTIMES:
                raise ValueError(f"runtimes: unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
        for precision in self.precisions:
            if precision not in PROFILE_PRECISIONS:
                raise ValueError(
                    f"precisions: unknown precision {precision!r}; known: {', '.join(PROFILE_PRECISIONS)}"
                )
        if not self.runtimes or not self.precisions:
            raise ValueError("runtimes and precisions must each list at least one entry")
        if not self.sources and self.id != "host":
            raise ValueError("sources: cite at least one source for the numbers in this profile")

    @property
    def int8_dot_product(self) -> bool:
        """int8 is fast here: a CPU dot-product instruction or an accelerator computing in int8."""
        return self.cpu.int8_dot_product or any("int8" in a.dtypes for a in self.accelerators)

    @property
    def fp16_arithmetic(self) -> bool:
        """fp16 is computed as fp16 somewhere on this device (CPU or accelerator)."""
        return self.cpu.fp16_arithmetic or any("fp16" in a.dtypes for a in self.accelerators)

    @property
    def gpu_fp16(self) -> bool:
        return any(a.kind == "gpu" and "fp16" in a.dtypes for a in self.accelerators)

    @property
    def gpu_onnx(self) -> bool:
        """onnxruntime runs here on CUDA or TensorRT."""
        return any(r in ("onnxruntime-cuda", "onnxruntime-tensorrt") for r in self.runtimes)

    def to_toml(self) -> str:
        """The profile as a TOML file that load_profile_file reads back to an equal Profile."""

        def value(v) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, (int, float)):
                return repr(v)
            if isinstance(v, (list, tuple)):
                return "[" + ", ".join(value(x) for x in v) + "]"
            return _toml_str(v)

        def table(obj) -> list[str]:
            return [f"{k} = {value(v)}" for k, v in to_dict(obj).items() if v is not None]

        lines = [f"id = {value(self.id)}", f"name = {value(self.name)}", f"aliases = {value(self.aliases)}",
                 f"arch = {value(self.arch)}", f"runtimes = {value(self.runtimes)}",
                 f"precisions = {value(self.precisions)}", f"notes = {value(self.notes)}",
                 "", "[cpu]", *table(self.cpu), "", "[memory]", *table(self.memory),
                 "", "[constraints]", *table(self.constraints), "", "[estimator]",
                 *(f"{k} = {value(getattr(self.estimator, k))}"
                   for k in ("peak_gflops_fp32", "peak_gflops_fp16", "peak_gops_int8"))]
        for acc in self.accelerators:
            lines += ["", "[[accelerators]]", *table(acc)]
        for src in self.sources:
            lines += ["", "[[sources]]", *table(src)]
        if self.estimator.fit is not None:
            lines += ["", "[estimator.fit]", self.estimator.fit.to_toml()]
        return "\n".join(lines) + "\n"

    @property
    def ridge_point_fp32(self) -> float:
        """FLOPs per byte above which an fp32 op is compute-bound on this device."""
        return self.estimator.peak_gflops_fp32 / self.memory.bandwidth_gbs
