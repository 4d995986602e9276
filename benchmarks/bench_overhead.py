"""Does edgekit bench distort what it measures? Its p50 against a bare loop of session.run.

A small ONNX model (the digits CNN, where any per-run overhead shows most) is measured
alternately by ``edgekit bench`` and by a bare loop of ``session.run`` with default session
options, each in a fresh process, several times; the medians are compared.

Goal: overhead at most 2%.

    .venv/bin/python benchmarks/bench_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import _common  # noqa: F401
import numpy as np
from _common import Goals, scratch

BARE = r"""
import sys, time, numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)}
for _ in range(200):
    session.run(None, x)
times, start = [], time.perf_counter()
while time.perf_counter() - start < float(sys.argv[2]):
    t0 = time.perf_counter()
    session.run(None, x)
    times.append((time.perf_counter() - t0) * 1000)
print(np.median(times))
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()

    from edgekit.convert.onnx_export import export_onnx
    from edgekit.models import load_model

    work = scratch("bench-overhead-")
    model = export_onnx(load_model("edgekit:digits-cnn"), work / "digits.onnx").path
    bench, bare = [], []
    for i in range(args.repeats):
        out = subprocess.run([sys.executable, "-m", "edgekit", "bench", str(model), "--json", "--min-seconds",
                              str(args.seconds), "--warmup-runs", "200"], capture_output=True, text=True, check=True)
        bench.append(json.loads(out.stdout)["results"][0]["steady"]["p50_ms"])
        out = subprocess.run([sys.executable, "-c", BARE, str(model), str(args.seconds)],
                             capture_output=True, text=True, check=True)
        bare.append(float(out.stdout))
        print(f"round {i + 1}: edgekit bench p50 {bench[-1] * 1000:.2f} us, bare loop p50 {bare[-1] * 1000:.2f} us")
    b, r = float(np.median(bench)), float(np.median(bare))
    overhead = (b - r) / r * 100
    print(f"\nmedian of {args.repeats} alternating rounds: edgekit bench {b * 1000:.2f} us, bare session.run "
          f"{r * 1000:.2f} us, overhead {overhead:+.2f}%")
    goals = Goals(__file__)
    goals.check("edgekit bench p50 overhead <= 2%", f"{overhead:+.2f}% ({b * 1000:.2f} vs {r * 1000:.2f} us)",
                overhead <= 2.0, baseline="a bare session.run loop")
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
