"""Runs inside the ARM64 root (python -m edgekit.emulation.arm_runner JOB.json): every variant of
the job on the same inputs, with edgekit's own backends (onnxruntime, LiteRT) and their ARM
kernels, one thread; outputs to OUT/<variant id>.npz. numpy and the runtimes only: no torch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(job_path: str) -> int:
    from edgekit.backends import SessionOptions
    from edgekit.formats import open_session
    from edgekit.models import load_model

    job = json.loads(Path(job_path).read_text())
    arrays = dict(np.load(job["inputs"]))
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for variant in job["variants"]:
        try:
            model = load_model(variant["path"])
            session = open_session(Path(variant["path"]), SessionOptions(threads=1), model)
            # converters rename inputs (LiteRT: serving_default_args_0): feed by the source's order
            names = [spec.name for spec in model.inputs]
            feeds = arrays if set(names) == set(arrays) else {
                name: arrays[source] for name, source in zip(names, job["input_names"])}
            outputs = session.run_batched(feeds)
            np.savez(out / f"{variant['id']}.npz", *outputs)
            print(f"ran {variant['id']}", flush=True)
        except Exception as exc:  # reported per variant: one failing kernel must not hide the others
            failures += 1
            (out / f"{variant['id']}.error").write_text(f"{type(exc).__name__}: {exc}")
            print(f"failed {variant['id']}: {exc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
