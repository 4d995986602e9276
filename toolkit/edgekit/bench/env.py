"""The environment a benchmark ran in: what it takes to trust or reproduce a number."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from .._io import installed_versions


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _temperature_c() -> float | None:
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*/temp")):
        value = _read(str(zone))
        if value and value.lstrip("-").isdigit():
            return int(value) / 1000.0
    return None


def last_level_cache_mb() -> float | None:
    """The largest data cache a core sees (sysfs), in MB: weights beyond it stream from DRAM."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        kind, size = _read(str(index / "type")), _read(str(index / "size"))
        if kind in ("Unified", "Data") and size and size[:-1].isdigit():
            scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}.get(size[-1])
            if scale:
                sizes.append(int(size[:-1]) * scale)
    return max(sizes) if sizes else None


def environment() -> dict:
    from ..devices.host import _cpuinfo, _flags, _max_ghz, available_cores

    info = _cpuinfo()

    versions = installed_versions(("onnxruntime", "onnxruntime-gpu", "ai-edge-litert", "tflite-runtime", "torch",
                                   "numpy", "edgekit"))
    return {
        "hostname": platform.node(), "machine": platform.machine(), "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu_model": info.get("model name") or info.get("Hardware") or info.get("CPU part") or platform.processor(),
        "cpu_flags": list(_flags(info)), "cores": available_cores(), "logical_cpus": os.cpu_count(),
        "max_ghz": round(_max_ghz(info), 2), "cache_mb": last_level_cache_mb(),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cur_mhz": (int(_read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq") or 0) // 1000) or None,
        "temperature_c": _temperature_c(),
        "versions": versions,
    }
