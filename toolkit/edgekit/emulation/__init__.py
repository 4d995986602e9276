"""ARM64 under QEMU user-mode emulation: the device's kernels and install, checked without a device."""

from .root import CPUS, EmulationError, Session, build_root, default_root, entered

__all__ = ["CPUS", "EmulationError", "Session", "build_root", "default_root", "entered"]
