"""`make test-haswell`: the tests whose numbers depend on the CPU's int8 kernels, on an AVX2-only x86.

int8 results differ between AVX2 without VNNI (VPMADDUBSW saturates unless weights are 7-bit),
AVX-512 VNNI and AMX, and a CI machine may be any of them. QEMU user mode emulates a Haswell (AVX2,
FMA, no AVX-512, no VNNI) on any x86_64 host, so these tests run on those kernels here too,
whatever this machine is: onnxruntime and numpy pick their code paths from the emulated cpuid,
and edgekit's host profile reads the same (edgekit.devices.host). AVX-512, VNNI and AMX cannot be
emulated; the host's own run of the suite covers them. Exits 1 on any failure.

    .venv/bin/python tests/haswell/run_haswell.py [pytest arguments]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Haswell without the features QEMU's TCG cannot give (each would print a warning per process).
CPU = "Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm"
# The unit tests that judge int8 accuracy or plan int8 settings from the CPU, and the guard and
# repairs that act on them.
TESTS = ("tests/unit/test_quantize.py", "tests/unit/test_guard.py", "tests/unit/test_plan.py",
         "tests/unit/test_budget_and_repairs.py", "tests/unit/test_devices.py")


def log(msg: str) -> None:
    print(f"[haswell {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def qemu() -> str:
    found = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("qemu-x86_64 is not installed: apt-get install qemu-user-static (as root), then run this again")
    log("installing qemu-user-static with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "qemu-user-static"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{' '.join(cmd)} failed: {done.stderr.strip()[-300:]}")
    return shutil.which("qemu-x86_64-static")


def main(argv: list[str]) -> int:
    if os.uname().machine != "x86_64":
        sys.exit(f"the Haswell run emulates x86_64 on x86_64 hosts; this one is {os.uname().machine}")
    emulate = [qemu(), "-cpu", CPU]
    # Check that the emulation is what it says: AVX2 and FMA, no AVX-512, no VNNI, in cpuid and in
    # the profile edgekit plans with.
    probe = subprocess.run(emulate + [sys.executable, "-c",
                                      "from edgekit.devices import host_profile; p = host_profile(); "
                                      "print(' '.join(f for f in p.cpu.isa if f.startswith(('avx', 'fma'))))"],
                           capture_output=True, text=True, cwd=ROOT)
    flags = set(probe.stdout.split())
    if probe.returncode or not {"avx2", "fma"} <= flags or any(f.startswith("avx512") or "vnni" in f for f in flags):
        log(f"the emulated CPU is not an AVX2-only x86 (flags {sorted(flags)}): {probe.stderr.strip()[-500:]}")
        return 1
    log(f"an emulated Haswell ({' '.join(sorted(flags))}) runs {len(TESTS)} test files; emulation is ~10x slower")
    started = time.monotonic()
    done = subprocess.run(emulate + [sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider",
                                     *TESTS, *argv], cwd=ROOT)
    log(f"{'passed' if done.returncode == 0 else 'FAILED'} in {time.monotonic() - started:.0f} s")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
