"""`make test-arm64`: edgekit's device side on ARM64 under QEMU, without a device.

Builds (or reuses) the cached ARM64 Debian root, installs edgekit into it with
targets/raspberrypi/install.sh exactly as on a Pi (runtime only, no torch), then on an emulated
Cortex-A72 (Pi 4: no sdot, no fp16) and Cortex-A76 (Pi 5: both) runs `edgekit run` on the digits
bundle, the runtime's fallback chain, the log store and a sync to a collector on this host's
loopback (device_checks.py), and MiniLM's sentences at their own lengths (text_checks.py). Needs root on x86_64 Debian/Ubuntu; exits 1 on any failure.

    .venv/bin/python tests/arm64/run_arm64.py [--bundle digits.ekb] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration._services import Collector  # noqa: E402
VENV_IN_ROOT = "/opt/edgekit-venv"
SRC_IN_ROOT = "/opt/edgekit-src"
WORK_IN_ROOT = "/opt/edgekit-work"


def log(msg: str) -> None:
    print(f"[arm64 {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def checkout_files() -> list[str]:
    """What a clone of this checkout holds (tracked and new files, never ignored build output)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                         check=True).stdout
    return [f for f in out.decode().split("\0") if f and (ROOT / f).is_file()]


def copy_checkout(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    for rel in checkout_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


def host_edgekit() -> str:
    return str(Path(sys.executable).with_name("edgekit"))


def build_bundle(out_dir: Path) -> Path:
    log("building the digits bundle on this host (edgekit optimize --target raspberrypi --package)")
    out = out_dir / "digits"
    subprocess.run([host_edgekit(), "optimize", "--target", "raspberrypi", "--out", str(out), "--package",
                    "--timing-seconds", "1"], check=True, capture_output=True, text=True)
    return out.with_suffix(".ekb")


def build_text_bundle(out_dir: Path) -> tuple[Path, Path]:
    """MiniLM for the Pi (TFLite int8 with length signatures) and 24 held-out sentences with their
    fp32 torch embeddings at their own lengths, made here where torch is."""
    import numpy as np
    import torch

    from edgekit.zoo import minilm

    log("building the MiniLM bundle on this host (edgekit optimize edgekit:minilm --target raspberrypi)")
    out = out_dir / "minilm"
    subprocess.run([host_edgekit(), "optimize", "edgekit:minilm", "--target", "raspberrypi", "--formats", "tflite",
                    "--precisions", "int8-dynamic", "--out", str(out), "--package", "--timing-seconds", "1"],
                   check=True, capture_output=True, text=True)
    sentences = minilm.sentences()[1::8]
    module = minilm.build_module()
    with torch.no_grad():
        embeddings = [module(*(torch.from_numpy(a) for a in minilm.tokenize([s]).values())).numpy()[0] for s in sentences]
    np.savez(out_dir / "sentences.npz", text=np.array(sentences), embedding=np.array(embeddings),
             tokens=np.array([len(minilm.tokenizer().encode(s).ids) for s in sentences]))
    return out.with_suffix(".ekb"), out_dir / "sentences.npz"


def start_collector(workdir: Path):
    """The host's collector on loopback, with a token for the emulated Pi: (Collector, token file)."""
    db = f"sqlite:///{workdir / 'collector.db'}"
    token = workdir / "collector.token"
    added = subprocess.run([host_edgekit(), "collector", "add-device", "arm64-pi", "--db", db], capture_output=True,
                           text=True, check=True)
    token.write_text(added.stdout.strip().splitlines()[-1] + "\n")
    collector = Collector(db, extra=("--store", str(workdir / "bundles"), "--decide-every", "0")).start()
    return collector, token


def stored_records(workdir: Path) -> int:
    import sqlite3

    with sqlite3.connect(workdir / "collector.db") as db:
        return db.execute("SELECT COUNT(*) FROM records").fetchone()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="a digits bundle (default: build one here)")
    parser.add_argument("--cpus", default="cortex-a72,cortex-a76")
    args = parser.parse_args()

    from edgekit.emulation import entered

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgekit-arm64-") as tmp:
        tmp = Path(tmp)
        bundle = args.bundle or build_bundle(tmp)
        text_bundle, sentences = build_text_bundle(tmp)
        collector, token = start_collector(tmp)
        url = collector.url
        try:
            with entered(log=log) as root:
                src, work = root.path(SRC_IN_ROOT), root.path(WORK_IN_ROOT)
                copy_checkout(src)
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                shutil.copy(bundle, work / "digits.ekb")
                shutil.copy(text_bundle, work / "minilm.ekb")
                shutil.copy(sentences, work / "sentences.npz")
                shutil.copy(ROOT / "targets/raspberrypi/sample_digits.npz", work / "sample_digits.npz")
                shutil.copy(token, work / "collector.token")
                # a fresh venv, as on a new Pi: one left from an earlier run keeps packages install.sh no
                # longer brings (pip's wheel cache in the root keeps this quick)
                shutil.rmtree(root.path(VENV_IN_ROOT), ignore_errors=True)
                log("installing edgekit with targets/raspberrypi/install.sh (as on a Pi; pip under emulation)")
                t = time.monotonic()
                done = root.run(["bash", f"{SRC_IN_ROOT}/targets/raspberrypi/install.sh", "--venv", VENV_IN_ROOT, "--text"],
                                check=False, timeout=1800)
                print(done.stdout[-2000:], done.stderr[-2000:], sep="\n", flush=True)
                if done.returncode:
                    log(f"FAIL: the Pi install script failed (exit {done.returncode})")
                    return 1
                log(f"installed in {time.monotonic() - t:.0f} s")
                failures = 0
                # what a LiteRT Pi carries: the size install.sh reports, and no toolkit packages
                size = next((line for line in done.stdout.splitlines() if "MB of packages" in line), "no size line")
                carried = root.run([f"{VENV_IN_ROOT}/bin/python", "-c", "import importlib.util as u; print(' '.join("
                                    "m for m in ('onnx', 'onnxruntime', 'torch') if u.find_spec(m)))"], check=False)
                lean = carried.returncode == 0 and not carried.stdout.strip()
                print(f"{'PASS' if lean else 'FAIL'} the Pi install: {size.removeprefix('==> ')}; toolkit packages "
                      f"in it: {carried.stdout.strip() or 'none'}", flush=True)
                failures += not lean
                for cpu in args.cpus.split(","):
                    before = stored_records(tmp)
                    log(f"emulated {cpu}: edgekit run on the digits bundle")
                    ran = root.run([f"{VENV_IN_ROOT}/bin/edgekit", "run", f"{WORK_IN_ROOT}/digits.ekb", "--json"],
                                   cpu=cpu, check=False)
                    ok = ran.returncode == 0 and '"active_variant"' in ran.stdout
                    print(f"{'PASS' if ok else 'FAIL'} edgekit run: exit {ran.returncode} "
                          f"{(ran.stderr or '').strip()[-300:]}", flush=True)
                    failures += not ok
                    log(f"emulated {cpu}: runtime, fallback chain, log store, sync to {url}")
                    checks = root.run([f"{VENV_IN_ROOT}/bin/python", f"{SRC_IN_ROOT}/tests/arm64/device_checks.py",
                                       "--bundle", f"{WORK_IN_ROOT}/digits.ekb",
                                       "--samples", f"{WORK_IN_ROOT}/sample_digits.npz", "--collector", url,
                                       "--token-file", f"{WORK_IN_ROOT}/collector.token", "--workdir", WORK_IN_ROOT,
                                       "--tag", cpu], cpu=cpu, check=False)
                    print(checks.stdout, checks.stderr[-1500:] if checks.returncode else "", sep="", flush=True)
                    failures += checks.returncode != 0
                    arrived = stored_records(tmp) - before
                    ok = arrived == 16
                    print(f"{'PASS' if ok else 'FAIL'} collector on the host stored {arrived} of the 16 records "
                          f"shipped from emulated {cpu}", flush=True)
                    failures += not ok
                    log(f"emulated {cpu}: MiniLM's sentences at their own lengths (TFLite length signatures)")
                    text = root.run([f"{VENV_IN_ROOT}/bin/python", f"{SRC_IN_ROOT}/tests/arm64/text_checks.py",
                                     "--bundle", f"{WORK_IN_ROOT}/minilm.ekb", "--sentences", f"{WORK_IN_ROOT}/sentences.npz"],
                                    cpu=cpu, check=False, timeout=1200)
                    print(text.stdout, text.stderr[-1500:] if text.returncode else "", sep="", flush=True)
                    failures += text.returncode != 0
        finally:
            collector.stop()
    log(f"{'FAILED' if failures else 'passed'} in {time.monotonic() - start:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
