"""edgekit optimize on the digits CNN: every int8 variant against fp32, accuracy recomputed here on
the held-out split, and latency measured side by side (interleaved, spinning off), per format.

The optimizer's own metrics are not trusted: each artifact it built (shipped or rejected) is run
again on the 450 held-out images. Goals: every int8 variant edgekit ships is within 0.5 points of
its format's fp32; every int8 variant that lost more was rejected by the guard.

    .venv/bin/python benchmarks/optimize_digits.py [--target host] [--budget 10]
"""

from __future__ import annotations

import argparse
import json
import sys

import _common  # noqa: F401
from _common import Goals, print_table, side_by_side, scratch


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="host")
    parser.add_argument("--budget", type=float, default=10.0)
    args = parser.parse_args()

    from edgekit.backends import SessionOptions
    from edgekit.formats import open_session
    from edgekit.models import load_model
    from edgekit.optimizer import optimize

    model = load_model("edgekit:digits-cnn")
    data = model.builtin_data("eval")
    out = scratch("bench-digits-") / "out"
    result = optimize(model, target=args.target, out=out, timing_s=2)
    shipped = {v["id"] for v in json.loads((out / "manifest.json").read_text())["variants"]}
    built = {c["id"]: c for c in result.report.to_dict()["candidates"] if c["file"]}  # passed and rejected alike
    sessions = {cid: open_session(out / c["file"], SessionOptions(threads=2), model) for cid, c in built.items()}
    accuracy = {cid: float((s.run_batched(data.arrays)[0].argmax(1) == data.labels).mean())
                for cid, s in sessions.items()}
    one = {k: v[:1] for k, v in data.arrays.items()}
    timed = {cid: s for cid, s in sessions.items() if cid in shipped}
    timings = side_by_side({cid: (lambda s=s: s.run(one)) for cid, s in timed.items()}, budget_s=args.budget)

    goals = Goals(__file__)
    table, shipped_drops, caught, missed = [], [], 0, []
    for fmt in ("onnx", "tflite"):
        fp32 = f"{fmt}-fp32"
        if fp32 not in accuracy:
            continue
        for cid, c in built.items():
            if c["format"] != fmt:
                continue
            drop = 100 * (accuracy[fp32] - accuracy[cid])
            is_int8 = c["precision"].startswith("int8")
            if is_int8 and cid in shipped:
                shipped_drops.append((cid, drop))
            if is_int8 and drop > 0.5:
                caught += cid not in shipped
                if cid in shipped:
                    missed.append(cid)
            speed = (f"{timings[fp32]['p50_ms'] / timings[cid]['p50_ms']:.2f}x"
                     if cid in timings and fp32 in timings else "-")
            table.append([cid, "shipped" if cid in shipped else c["status"], f"{accuracy[cid] * 100:.2f}",
                          f"{drop:+.2f}", f"{timings[cid]['p50_ms'] * 1000:.1f}" if cid in timings else "-", speed,
                          f"{c['size_bytes'] / 1e3:.0f}"])
    print(f"digits CNN, {len(data)} held-out images, target {args.target}; winner {result.winner}")
    print_table(["candidate", "status", "accuracy % (recomputed)", "drop vs fp32 (points)", "p50 us",
                 "speed-up vs fp32", "KB"], table)
    print()
    worst = max(shipped_drops, key=lambda t: t[1]) if shipped_drops else None
    goals.check("every shipped int8 variant within 0.5 points", "no int8 variant shipped" if worst is None else
                f"worst {worst[0]} {worst[1]:+.2f} points", worst is not None and worst[1] <= 0.5,
                baseline="fp32 of the same format, same 450 images")
    goals.check("every int8 variant that lost > 0.5 points was rejected",
                f"{caught} rejected, {len(missed)} shipped ({', '.join(missed) or 'none'})", not missed,
                baseline="fp32 of the same format")
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
