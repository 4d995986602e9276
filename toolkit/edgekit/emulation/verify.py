"""`optimize --verify-arm64`: the passing candidates run again on ARM64 kernels (judged by
edgekit.optimizer.arm64 with the accuracy guard's metrics).

onnxruntime's and XNNPACK's int8 kernels take other code paths on ARM (sdot on a Cortex-A76,
widening multiply-adds on an A72) than on x86 (VNNI, or AVX2's saturating u8 x s8 pairs), so an
int8 variant that passed on the workstation can round differently on the device. Every passing
candidate is run on a bounded sample of the evaluation data under QEMU on the target's core, its
outputs judged with the same metrics and tolerance as on x86, and compared with the x86 outputs
of the same file. A variant whose ARM numerics fail is rejected with the numbers. Emulation is
~450x slower than a device: nothing here is a latency.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from ..devices.profile import Profile
from .root import EmulationError, Session, entered

VENV = "/opt/edgekit-verify"
DEPENDENCIES = ("numpy", "onnx", "onnxruntime", "ai-edge-litert", "click", "rich")
STAMP = ".edgekit-verify-deps"


def target_cpu(profile: Profile) -> str:
    """The emulated core for a target: the A76 where the board has sdot or fp16, else the A72."""
    return "cortex-a76" if profile.cpu.int8_dot_product or profile.cpu.fp16_arithmetic else "cortex-a72"


def _site_packages(root: Session) -> str:
    done = root.run([f"{VENV}/bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    return done.stdout.strip()


def prepare(root: Session, progress: Callable[[str], None]) -> None:
    """A venv in the root with the runtimes (installed once) and this edgekit's code (every time:
    it is pure Python, copied, so the ARM side runs exactly the code that runs here)."""
    import edgekit

    if not root.path(f"{VENV}/{STAMP}").exists():
        progress("installing numpy, onnxruntime and LiteRT into the ARM64 root (once)")
        root.run(["python3", "-m", "venv", VENV], timeout=600)
        root.run([f"{VENV}/bin/python", "-m", "pip", "install", "--quiet", *DEPENDENCIES], timeout=1800)
        root.path(f"{VENV}/{STAMP}").write_text(" ".join(DEPENDENCIES) + "\n")
    site = root.path(_site_packages(root))
    target = site / "edgekit"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(Path(edgekit.__file__).parent, target, ignore=shutil.ignore_patterns("__pycache__"))
    profiles = Path(str(resources.files("edgekit.profiles")))
    shutil.rmtree(target / "profiles", ignore_errors=True)
    shutil.copytree(profiles, target / "profiles", ignore=shutil.ignore_patterns("__pycache__"))


def run_on_arm(variants: dict[str, Path], arrays: dict[str, np.ndarray], input_names: list[str], cpu: str,
               progress: Callable[[str], None]) -> dict[str, list[np.ndarray] | str]:
    """{variant id: its outputs on the ARM kernels, or the error it raised there}."""
    with entered(log=progress) as root:
        prepare(root, progress)
        work = f"/opt/edgekit-verify-work/{uuid.uuid4().hex}"
        host_work = root.path(work)
        host_work.mkdir(parents=True)
        try:
            np.savez(host_work / "inputs.npz", **arrays)
            job = {"inputs": f"{work}/inputs.npz", "out": f"{work}/out", "input_names": input_names, "variants": []}
            for vid, path in variants.items():
                shutil.copy(path, host_work / path.name)
                job["variants"].append({"id": vid, "path": f"{work}/{path.name}"})
            (host_work / "job.json").write_text(json.dumps(job))
            progress(f"running {len(variants)} variants on an emulated {cpu} ({len(next(iter(arrays.values())))} "
                     "samples; emulation is slow, and never timed)")
            try:
                root.run([f"{VENV}/bin/python", "-m", "edgekit.emulation.arm_runner", f"{work}/job.json"], cpu=cpu,
                         timeout=3600)
            except subprocess.TimeoutExpired:
                raise EmulationError("the ARM64 run took over an hour", "lower --arm64-samples") from None
            results: dict[str, list[np.ndarray] | str] = {}
            for vid in variants:
                error = host_work / "out" / f"{vid}.error"
                if error.exists():
                    results[vid] = error.read_text()
                    continue
                with np.load(host_work / "out" / f"{vid}.npz") as data:
                    results[vid] = [data[f"arr_{i}"] for i in range(len(data.files))]
            return results
        finally:
            shutil.rmtree(host_work, ignore_errors=True)
