#!/usr/bin/env python3
"""Example app for a Raspberry Pi: load an edgekit bundle and predict with edgekit's runtime.

The runtime verifies the bundle, picks the first variant that runs here and passes its golden
self-test (e.g. int8 TFLite with XNNPACK, then fp32 ONNX), falls back on failures, and never
needs torch.

    python app.py digits.ekb --input sample_digits.npz     # real digits shipped beside this app
    python app.py digits.ekb --runs 100                     # golden inputs, latency only
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def fallback(inputs: dict) -> dict:
    """The safe default when every variant fails: 'unknown' scores (an app-specific rule)."""
    batch = len(next(iter(inputs.values())))
    return {"logits": np.zeros((batch, 10), np.float32)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", help="a .ekb bundle (edgekit package) or its unpacked directory")
    parser.add_argument("--input", help=".npz with one array per model input (optional 'labels')")
    parser.add_argument("--runs", type=int, default=20, help="timed single-sample predictions")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    from edgekit.errors import EdgekitError
    from edgekit.runtime import load

    try:
        model = load(args.bundle, fallback=fallback, threads=args.threads)
    except EdgekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    names = [spec["name"] for spec in model.inputs]
    labels = None
    if args.input:
        with np.load(args.input) as npz:
            data = {k: npz[k] for k in npz.files}
        labels = data.pop("labels", None)
        if len(names) == 1 and names[0] not in data and len(data) == 1:
            data = {names[0]: next(iter(data.values()))}  # a single unnamed array feeds the input
        feeds = {name: data[name] for name in names}
    else:
        feeds = model._golden[0] if model._golden else None
        if feeds is None:
            print("error: this bundle has no golden inputs; pass --input", file=sys.stderr)
            return 1

    outputs = model.predict(feeds)
    first = next(iter(outputs.values()))
    if first.ndim == 2 and first.shape[1] <= 1000:  # class scores: show the predicted classes
        predicted = first.argmax(axis=1)
        print("predicted:", " ".join(map(str, predicted[:20])), "..." if len(predicted) > 20 else "")
        if labels is not None:
            print(f"accuracy: {(predicted == labels).mean():.3f} on {len(labels)} samples")
    else:
        print("output shape:", first.shape)

    single = {k: v[:1] for k, v in feeds.items()}
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        model.predict(single)
        times.append((time.perf_counter() - start) * 1000)
    stats = model.stats()
    print(f"active variant: {stats['active_variant']}; fallbacks: {stats['fallbacks']}")
    print(f"latency (batch 1, {args.runs} runs): median {np.median(times):.3f} ms, p90 {np.percentile(times, 90):.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
