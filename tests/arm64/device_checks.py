"""What `make test-arm64` runs inside the emulated ARM64 root, with the Pi's install (no torch).

    python device_checks.py --bundle digits.ekb --samples sample_digits.npz --collector URL --token-file T

Each check prints one line; any failure exits 1. Latency under emulation means nothing (QEMU is
~450x slower than a device), so nothing here is timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FAILED = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def no_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        check("runtime-only install", True, "torch is not importable, as on a Pi")
        return
    check("runtime-only install", False, "torch is importable in the device venv")


def golden_and_accuracy(bundle: Path, samples: Path) -> np.ndarray:
    from edgekit.runtime import load

    model = load(bundle)  # verifies the files and runs every variant's golden self-test
    stats = model.stats()
    data = np.load(samples)
    logits = model.predict({"input": data["input"]})["logits"]
    accuracy = float((logits.argmax(1) == data["labels"]).mean())
    check("golden self-test", bool(stats["active_variant"]),
          f"active variant {stats['active_variant']} on {platform.machine()} "
          "(" + ", ".join(f"{v['id']}:{v['provider'] or v['skipped']}" for v in stats["variants"]) + ")")
    check("accuracy on 64 held-out digits", accuracy > 0.9, f"{accuracy:.1%}")
    return logits


def fallback_chain(bundle: Path, samples: Path, reference: np.ndarray) -> None:
    """The first variant crashes in service (after its self-test): the next one answers, with the
    same classes, and the crash is counted by reason."""
    from edgekit.bundle import open_bundle
    from edgekit.runtime import load, register_runtime
    from edgekit.runtime.registry import _OPENERS

    with tempfile.TemporaryDirectory() as tmp:
        opened, _, holder = open_bundle(bundle)
        unpacked = Path(tmp) / "b"
        shutil.copytree(opened, unpacked)
        manifest_path = unpacked / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        first = manifest["variants"][0]
        real = _OPENERS[first["runtime"]]

        class CrashInService:
            def __init__(self, path, variant, threads, specs):
                self.inner = real(path, variant, threads, specs)
                self.active_provider = self.inner.active_provider
                self.calls = 0

            def run(self, feeds):
                self.calls += 1
                if self.calls > 1:  # call 1 is the golden self-test
                    raise RuntimeError("simulated kernel crash on the device")
                return self.inner.run(feeds)

        register_runtime("arm64-crash", CrashInService)
        first["runtime"] = "arm64-crash"
        manifest_path.write_text(json.dumps(manifest))
        model = load(unpacked, demote_after=2)
        data = np.load(samples)
        answers = [model.predict({"input": data["input"][i:i + 8]})["logits"].argmax(1) for i in range(0, 64, 8)]
        stats = model.stats()
        same = bool((np.concatenate(answers) == reference.argmax(1)).mean() > 0.98)
        check("fallback chain", same and stats["fallbacks_by_reason"].get("RuntimeError", 0) >= 1,
              f"{first['id']} crashed; answers from the next variant match: {same}; "
              f"fallbacks {stats['fallbacks_by_reason']}; demoted: "
              f"{[v['id'] for v in stats['variants'] if v['demoted']]}")


def log_store_and_sync(bundle: Path, samples: Path, workdir: Path, collector: str, token_file: Path,
                       device_tag: str) -> None:
    from edgekit.runtime import load
    from edgekit.sync import LogStore

    db = workdir / f"log-{device_tag}.db"
    store = LogStore(str(db), sampling="all")
    model = load(bundle, log_store=store)
    data = np.load(samples)
    ids = [model.predict({"input": data["input"][i:i + 1]}).request_id for i in range(16)]
    for rid, label in zip(ids[:4], data["labels"][:4]):
        model.feedback(rid, label=int(label))
    store.close() if hasattr(store, "close") else None
    config = workdir / f"sync-{device_tag}.toml"
    config.write_text(f'db = "{db}"\nurl = "{collector}"\ntoken_file = "{token_file}"\nbatch_size = 8\n')
    edgekit = Path(sys.executable).with_name("edgekit")
    done = subprocess.run([str(edgekit), "sync", "run", "--config", str(config), "--once"], capture_output=True,
                          text=True, timeout=600)
    status = subprocess.run([str(edgekit), "sync", "status", "--config", str(config), "--json"], capture_output=True,
                            text=True, timeout=600)
    try:
        pending = json.loads(status.stdout).get("pending")
    except ValueError:
        pending = None
    check("log store and sync", done.returncode == 0 and pending == 0,
          f"16 predictions and 4 labels logged, sync exit {done.returncode}, pending after sync: {pending}"
          + (f" ({(done.stderr or done.stdout).strip()[-200:]})" if done.returncode else ""))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--samples", type=Path, required=True)
    parser.add_argument("--collector", required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--tag", required=True)
    args = parser.parse_args()
    print(f"ARM64 checks on {platform.machine()}, python {platform.python_version()}", flush=True)
    no_torch()
    reference = golden_and_accuracy(args.bundle, args.samples)
    fallback_chain(args.bundle, args.samples, reference)
    log_store_and_sync(args.bundle, args.samples, args.workdir, args.collector, args.token_file, args.tag)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
