"""The embedded runtime's cost over a bare session.run, and a cache hit, measured side by side.

- MiniLM int8 (ONNX, dynamic per-channel): predict p50 at most 3% over session.run p50.
- A tiny model (the digits CNN, fp32 ONNX): at most 30 us added per call; a cache hit at most 50 us.
Both sides call the same onnxruntime session (thread spinning off) and are interleaved.

    .venv/bin/python benchmarks/runtime_overhead.py [--budget 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _common  # noqa: F401
from _common import Goals, print_table, side_by_side, scratch


def bundle_for(model_ref: str, precision: str, work: Path) -> Path:
    from edgekit import optimize
    from edgekit.bundle import make_bundle

    out = work / model_ref.split(":")[1]
    optimize(model_ref, target="host", out=out, formats={"onnx"}, precisions={precision}, timing_s=1)
    make_bundle(out, out.with_suffix(".ekb"))
    return out.with_suffix(".ekb")


def measure(bundle: Path, budget: float) -> dict:
    from edgekit.runtime import load

    model = load(bundle)
    cached = load(bundle, cache_size=16)
    # The bare loop calls the very onnxruntime session the runtime wraps: what is measured is the
    # wrapper (validation, fallback chain, stats), not the difference between two sessions.
    bare = model.active.session.session
    sample = {k: v[:1] for k, v in model._golden[0].items()}
    cached.predict(sample)
    runs = {"session.run": lambda: bare.run(None, sample), "predict": lambda: model.predict(sample),
            "predict (cache hit)": lambda: cached.predict(sample)}
    return side_by_side(runs, budget_s=budget, min_rounds=200)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=20.0)
    args = parser.parse_args()
    work = scratch("runtime-overhead-")
    goals = Goals(__file__)
    rows = []
    for ref, precision in (("edgekit:minilm", "int8-dynamic"), ("edgekit:digits-cnn", "fp32")):
        print(f"building a bundle for {ref} ({precision}) ...", flush=True)
        t = measure(bundle_for(ref, precision, work), args.budget)
        base, pred, hit = t["session.run"]["p50_ms"], t["predict"]["p50_ms"], t["predict (cache hit)"]["p50_ms"]
        added_us, pct = (pred - base) * 1000, (pred - base) / base * 100
        rows.append([ref, precision, f"{base * 1000:.1f}", f"{pred * 1000:.1f}", f"{hit * 1000:.1f}", t["predict"]["n"]])
        if ref.endswith("minilm"):
            goals.check("MiniLM int8: predict p50 <= 3% over session.run", f"{pct:+.2f}%", pct <= 3.0,
                        baseline="the same onnxruntime session, bare")
        else:
            goals.check("digits CNN: predict adds <= 30 us", f"{added_us:+.1f} us", added_us <= 30,
                        baseline="the same onnxruntime session, bare")
            goals.check("digits CNN: cache hit p50 <= 50 us", f"{hit * 1000:.1f} us", hit * 1000 <= 50)
    print()
    print_table(["model", "variant", "session.run p50 us", "predict p50 us", "cache hit p50 us", "n"], rows)
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
