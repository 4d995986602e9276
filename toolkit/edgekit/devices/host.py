"""The ``host`` profile: built at run time from this machine's CPU flags, cores and RAM.

Peak rates are derived from the instruction set with per-core throughputs that hold for common
cores (two 128-bit FMA pipes on Armv8 big cores, two 256-bit FMA pipes on AVX2/AVX-512 x86 cores
such as Zen 4, which runs AVX-512 on 256-bit datapaths). They are estimates: the profile issue
calibrates them against measured time.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from .profile import (FP16_ARITHMETIC_FLAGS, INT8_DOT_PRODUCT_FLAGS, VNNI_FLAGS, Constraints, Cpu, Estimator, Memory,
                      Profile, Source)

# Memory bandwidth cannot be read from flags; assume a modest figure per architecture.
_ASSUMED_BANDWIDTH_GBS = {"x86_64": 20.0, "aarch64": 10.0, "armv7l": 4.0}


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    return info


# /proc/cpuinfo flag -> the name numpy gives the same feature when it asks cpuid itself.
_CPUID_NAMES = {"avx": "AVX", "avx2": "AVX2", "fma": "FMA3", "f16c": "F16C", "avx512f": "AVX512F",
                "avx512bw": "AVX512BW", "avx512vl": "AVX512VL", "avx512dq": "AVX512DQ", "avx512cd": "AVX512CD",
                "avx512_vnni": "AVX512VNNI", "avx512_bf16": "AVX512BF16", "avx512_fp16": "AVX512FP16",
                "asimd": "ASIMD", "asimddp": "ASIMDDP", "asimdhp": "ASIMDHP", "asimdfhm": "ASIMDFHM", "sve": "SVE"}
# SIMD flags numpy does not check (AVX-VNNI, AMX, the rarer AVX-512 and SVE/SME sets): trusted only
# where cpuid agrees with the kernel on every flag it can check.
_UNCHECKED_SIMD = ("avx512", "avx_", "amx", "sve", "sme")


def _cpuid_features() -> dict[str, bool]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return {}
    return dict(__cpu_features__)


def _flags(info: dict[str, str]) -> tuple[str, ...]:
    """The SIMD flags this process's code really runs with. /proc/cpuinfo is the kernel's view of
    the physical CPU; under an emulator (qemu-x86_64 -cpu Haswell on an AVX-512 host) or a masked
    virtual CPU, onnxruntime picks its kernels from cpuid instead, and int8 settings chosen for
    VNNI would saturate on AVX2 kernels. So a flag that cpuid (as numpy reads it) denies is dropped,
    and where any is, the flags cpuid cannot vouch for go too."""
    raw = set((info.get("flags") or info.get("Features") or "").split())
    seen = _cpuid_features()
    denied = {flag for flag, name in _CPUID_NAMES.items() if flag in raw and seen.get(name) is False}
    if denied:
        raw -= denied
        raw = {f for f in raw if f in _CPUID_NAMES or not f.startswith(_UNCHECKED_SIMD)}
    return tuple(sorted(raw))


def _max_ghz(info: dict[str, str]) -> float:
    try:
        khz = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()
        return int(khz) / 1e6
    except (OSError, ValueError):
        pass
    try:
        return float(info.get("cpu MHz", "")) / 1000.0
    except ValueError:
        return 2.0  # unknown: a middling clock keeps estimates in a sane range


def _ram_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 1024


def available_cores() -> int:
    """The cores this process may run on (its affinity), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _peaks(arch: str, flags: tuple[str, ...], cores: int, ghz: float) -> Estimator:
    has = set(flags).__contains__
    if arch == "x86_64":
        fp32 = 32 if has("fma") else 16  # 2 pipes x 8 fp32 lanes x FMA
        # VNNI fuses the int8 multiply-add: 4 int8 MACs per fp32 lane; AVX2's vpmaddubsw chain ~2x.
        int8 = fp32 * (4 if VNNI_FLAGS & set(flags) else 2)
        fp16 = fp32 * (2 if FP16_ARITHMETIC_FLAGS & set(flags) else 1)  # otherwise fp16 is converted to fp32
    else:
        fp32 = 16  # 2 pipes x 4 fp32 lanes x FMA
        int8 = fp32 * (4 if INT8_DOT_PRODUCT_FLAGS & set(flags) else 2)  # sdot: 4 int8 MACs per 32-bit lane
        fp16 = fp32 * (2 if FP16_ARITHMETIC_FLAGS & set(flags) else 1)
    scale = cores * ghz
    return Estimator(
        peak_gflops_fp32=fp32 * scale, peak_gflops_fp16=fp16 * scale, peak_gops_int8=int8 * scale
    )


def _precisions(arch: str, flags: tuple[str, ...]) -> tuple[str, ...]:
    fast_int8 = bool(INT8_DOT_PRODUCT_FLAGS & set(flags))
    fast_fp16 = bool(FP16_ARITHMETIC_FLAGS & set(flags))
    order = ["int8"] if fast_int8 else []
    order += ["fp16"] if fast_fp16 else []
    order += ["fp32"]
    if not fast_int8:
        order.append("int8")  # still worth a try: smaller files, sometimes faster
    return tuple(order)


def _runtimes() -> tuple[str, ...]:
    import importlib.util

    runtimes = []
    if importlib.util.find_spec("ai_edge_litert") or importlib.util.find_spec("tflite_runtime"):
        runtimes.append("litert-xnnpack")
    runtimes.append("onnxruntime-cpu")
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    except ImportError:
        providers = []
    if "CUDAExecutionProvider" in providers:
        runtimes.insert(0, "onnxruntime-cuda")
    if "TensorrtExecutionProvider" in providers:
        runtimes.insert(0, "onnxruntime-tensorrt")
    return tuple(runtimes)


def host_profile() -> Profile:
    info = _cpuinfo()
    return profile_from_environment({
        "machine": platform.machine(), "cpu_model": info.get("model name") or info.get("CPU part") or "",
        "cpu_flags": list(_flags(info)), "cores": available_cores(), "max_ghz": _max_ghz(info),
        "ram_mb": _ram_mb()}, runtimes=_runtimes())


def profile_from_environment(env: dict, runtimes: tuple[str, ...] = ("onnxruntime-cpu",), profile_id: str = "host",
                             where: str = "read at run time") -> Profile:
    """A profile of a machine from what edgekit's benchmark environment reports about it (this
    host, or a device through its agent): arch, CPU flags, cores and clock give the peaks."""
    arch = env.get("machine") or "x86_64"
    arch = {"arm64": "aarch64", "AMD64": "x86_64"}.get(arch, arch)
    flags = tuple(env.get("cpu_flags") or ())
    cores, ghz = int(env.get("cores") or 1), float(env.get("max_ghz") or 1.0)
    model = env.get("cpu_model") or arch
    return Profile(
        id=profile_id,
        name=f"this machine ({model})" if profile_id == "host" else model,
        aliases=("local", "this") if profile_id == "host" else (),
        arch=arch if arch in ("aarch64", "armv7l", "x86_64") else "x86_64",
        cpu=Cpu(core=model, cores=cores, max_ghz=round(ghz, 2), isa=flags),
        memory=Memory(ram_mb=int(env.get("ram_mb") or 1024), bandwidth_gbs=_ASSUMED_BANDWIDTH_GBS.get(arch, 10.0)),
        runtimes=runtimes,
        precisions=_precisions(arch, flags),
        constraints=Constraints(),
        estimator=_peaks(arch, flags, cores, ghz),
        sources=(
            Source("CPU model, flags and clock", f"/proc/cpuinfo and cpufreq, {where}"),
            Source("cores", "sched_getaffinity (the cores the process may use)"),
            Source("RAM", "/proc/meminfo"),
        ),
        notes=(
            "Built at run time. Peaks are derived from the ISA flags (see edgekit/devices/host.py); "
            "memory bandwidth is an assumed figure, not a measurement."
        ),
        path="<built at run time>",
    )
