"""edgekit optimize on the digits CNN: int8 against fp32, accuracy on the held-out split and
latency measured side by side (interleaved, spinning off), per format.

Goal: int8 accuracy drop <= 0.5 points against fp32.

    .venv/bin/python benchmarks/optimize_digits.py [--target host] [--budget 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import _common  # noqa: F401
from _common import print_table, side_by_side


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="host")
    parser.add_argument("--budget", type=float, default=10.0)
    args = parser.parse_args()

    from edgekit.backends import SessionOptions, open_session
    from edgekit.models import load_model
    from edgekit.optimizer import optimize

    model = load_model("edgekit:digits-cnn")
    data = model.builtin_data("eval")
    out = Path(tempfile.mkdtemp(prefix="bench-digits-")) / "out"
    result = optimize(model, target=args.target, out=out, time_budget_s=2)
    rows = {c["id"]: c for c in result.report["candidates"] if c["status"] == "passed"}
    sessions = {cid: open_session(out / c["file"], SessionOptions(threads=2), model) for cid, c in rows.items()}
    one = {k: v[:1] for k, v in data.arrays.items()}
    timings = side_by_side({cid: (lambda s=s: s.run(one)) for cid, s in sessions.items()}, budget_s=args.budget)

    table, ok = [], True
    for fmt in ("onnx", "tflite"):
        fp32 = rows.get(f"{fmt}-fp32")
        if not fp32:
            continue
        for cid, c in rows.items():
            if c["format"] != fmt:
                continue
            drop = 100 * (fp32["metrics"]["accuracy"] - c["metrics"]["accuracy"])
            ratio = timings[f"{fmt}-fp32"]["p50_ms"] / timings[cid]["p50_ms"]
            if c["precision"].startswith("int8") and drop > 0.5:
                ok = False
            table.append([cid, f"{c['metrics']['accuracy'] * 100:.2f}", f"{drop:+.2f}", f"{timings[cid]['p50_ms'] * 1000:.1f}",
                          f"{ratio:.2f}x", f"{c['size_bytes'] / 1e3:.0f}"])
    print(f"digits CNN, {len(data)} held-out images, target {args.target}; winner {result.winner}")
    print_table(["candidate", "accuracy %", "drop vs fp32 (points)", "p50 us", "speed-up vs fp32", "KB"], table)
    print(f"\ngoal: every int8 variant within 0.5 points of fp32 -> {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
