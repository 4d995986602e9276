"""edgekit optimize on all-MiniLM-L6-v2 (each sentence at its own length, batch 1) against the usual baselines.

Measured side by side in one run, interleaved, onnxruntime spinning off: torch eager fp32,
onnxruntime fp32, onnxruntime's default quantize_dynamic, and edgekit's chosen variant for the
host. Prints latency ratios against torch eager and the cosine metrics on the sentence set, then
checks that the raspberrypi plan's TFLite int8 variant passes the same accuracy bar.

Goals, each against a named baseline measured in the same interleaved run: edgekit's choice is
>= 4x faster than torch eager fp32 and >= 2x faster than onnxruntime fp32 on the sentences at their
own lengths (the 128-token times printed beside them); against onnxruntime's
default quantize_dynamic it is not slower (>= 1.0x) and at least as accurate (min cosine); mean
cosine >= 0.99 and min >= 0.98 against torch; the Pi plan's TFLite int8 passes the same bar.

Wall time of `optimize --target host` itself (issue 27: 86 s on an idle 2-core host before the
task-aware checks, repairs and evidence-based selection; at most 1.5x that now), with an empty
export cache and again with the cache the first run filled, beside the bare pipeline a user would
write by hand in the same run (torch.onnx export + onnxruntime's quantize_dynamic).

    .venv/bin/python benchmarks/optimize_minilm.py [--budget 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from _common import Goals, cosine_rows, print_table, side_by_side, scratch


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of interleaved timing")
    args = parser.parse_args()

    import torch
    from onnxruntime.quantization import quantize_dynamic

    from edgekit.backends import SessionOptions
    from edgekit.formats import open_session
    from edgekit.convert.onnx_export import export_onnx
    from edgekit.models import load_model
    from edgekit.data import run_dataset
    from edgekit.optimizer import optimize
    from edgekit.optimizer.timing import cycle, timed_samples

    torch.set_num_threads(2)
    model = load_model("edgekit:minilm")
    data = model.builtin_data("eval")
    # timed on 16 sentences spread over the length distribution, each at its own length, in turn
    samples = timed_samples(data, 16)

    def embed(feeds):
        with torch.no_grad():
            return [model.module(*(torch.from_numpy(feeds[s.name]) for s in model.inputs)).numpy()]

    reference = data.grouped(embed)[0]

    work = scratch("bench-minilm-")
    os.environ["EDGEKIT_CACHE"] = str(work / "cache")  # an empty export cache: the first run is cold
    print("optimizing for host ...", flush=True)
    t0 = time.perf_counter()
    chosen = optimize(model, target="host", out=work / "host", timing_s=10)
    cold_s = time.perf_counter() - t0
    best = chosen.best_path
    print(f"edgekit chose {chosen.winner} ({best.name}) in {cold_s:.0f} s; again with the export cache ...", flush=True)
    t0 = time.perf_counter()
    optimize(model, target="host", out=work / "host-again", timing_s=10)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fp32 = export_onnx(model, work / "fp32.onnx").path
    quantize_dynamic(str(fp32), str(work / "ort-default-int8.onnx"))  # onnxruntime's defaults
    bare_s = time.perf_counter() - t0

    options = SessionOptions(threads=2)
    sessions = {
        "onnxruntime fp32": open_session(fp32, options, model),
        "onnxruntime quantize_dynamic (defaults)": open_session(work / "ort-default-int8.onnx", options, model),
        f"edgekit choice ({chosen.winner})": open_session(best, options, model),
    }
    tensors = [tuple(torch.from_numpy(f[s.name]) for s in model.inputs) for f in samples]

    def eager_one(t):
        with torch.no_grad():
            model.module(*t)

    eager = cycle([lambda t=t: eager_one(t) for t in tensors])

    runs = {"torch eager fp32": eager} | {name: cycle([s.bind(f) for f in samples]) for name, s in sessions.items()}
    timings = side_by_side(runs, budget_s=args.budget)

    accuracy = {"torch eager fp32": (1.0, 1.0)}
    for name, session in sessions.items():
        cos = cosine_rows(reference, run_dataset(session, data, model)[0])
        accuracy[name] = (float(cos.mean()), float(cos.min()))
    base = timings["torch eager fp32"]["p50_ms"]
    rows = [[name, f"{t['p50_ms']:.2f}", f"{t['p90_ms']:.2f}", t["n"], f"{base / t['p50_ms']:.2f}x",
             f"{accuracy[name][0]:.4f}", f"{accuracy[name][1]:.4f}"] for name, t in timings.items()]
    print(f"\nall-MiniLM-L6-v2, batch 1, {len(data)} sentences at their own lengths; interleaved medians")
    print_table(["variant", "p50 ms", "p90 ms", "n", "speed-up vs torch", "cos mean", "cos min"], rows)

    name = f"edgekit choice ({chosen.winner})"
    ours = timings[name]["p50_ms"]
    mean_cos, min_cos = accuracy[name]
    ort_fp32, ort_int8 = "onnxruntime fp32", "onnxruntime quantize_dynamic (defaults)"
    goals = Goals(__file__)
    print(f"\noptimize --target host: {cold_s:.0f} s with an empty export cache, {warm_s:.0f} s with it filled; the "
          f"bare export + quantize_dynamic: {bare_s:.0f} s ({cold_s / bare_s:.1f}x); load average "
          f"{os.getloadavg()[0]:.1f}")
    goals.check("optimize --target host wall time <= 129 s", f"{cold_s:.0f} s (empty export cache)", cold_s <= 129,
                baseline="issue 27: 86 s on an idle 2-core host, x1.5")
    goals.check("optimize again with the export cache is faster", f"{warm_s:.0f} s vs {cold_s:.0f} s",
                warm_s < cold_s, baseline="the same run with an empty cache")
    goals.check("host choice >= 4x faster", f"{base / ours:.2f}x", base / ours >= 4.0, baseline="torch eager fp32")
    # int8 speeds up the matrix products, a smaller share of a 15-token sentence's time than of
    # 128 tokens (issue 27 set this goal at 128): both printed, the goal on the sentences as sent
    from edgekit.zoo import minilm

    long = minilm.tokenize([" ".join(minilm.sentences())], 128)
    at_128 = side_by_side({n: sessions[n].bind(long) for n in (ort_fp32, name)}, budget_s=args.budget / 3)
    print(f"at 128 tokens: {ort_fp32} {at_128[ort_fp32]['p50_ms']:.2f} ms, {name} {at_128[name]['p50_ms']:.2f} ms "
          f"({at_128[ort_fp32]['p50_ms'] / at_128[name]['p50_ms']:.2f}x)")
    goals.check("host choice >= 2x faster", f"{timings[ort_fp32]['p50_ms'] / ours:.2f}x",
                timings[ort_fp32]["p50_ms"] / ours >= 2.0, baseline=ort_fp32)
    goals.check("host choice not slower", f"{timings[ort_int8]['p50_ms'] / ours:.2f}x",
                timings[ort_int8]["p50_ms"] / ours >= 1.0, baseline=ort_int8)
    goals.check("host choice at least as accurate (min cosine)", f"{min_cos:.4f} vs {accuracy[ort_int8][1]:.4f}",
                min_cos >= accuracy[ort_int8][1], baseline=ort_int8)
    goals.check("host choice cosine mean >= 0.99, min >= 0.98", f"{mean_cos:.4f} / {min_cos:.4f}",
                mean_cos >= 0.99 and min_cos >= 0.98, baseline="torch eager fp32 outputs")

    print("\noptimizing for raspberrypi (TFLite int8 only) ...", flush=True)
    pi = optimize(model, target="raspberrypi", out=work / "pi", formats={"tflite"}, precisions={"int8-dynamic"},
                  timing_s=2)
    row = pi.report.to_dict()["candidates"][0]
    pi_ok = row["status"] == "passed" and row["metrics"]["cosine_mean"] >= 0.99 and row["metrics"]["cosine_min"] >= 0.98
    goals.check(f"raspberrypi {row['id']} cosine mean >= 0.99, min >= 0.98",
                f"{row['metrics']['cosine_mean']:.4f} / {row['metrics']['cosine_min']:.4f} ({row['status']})",
                pi_ok, baseline="torch eager fp32 outputs")
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
