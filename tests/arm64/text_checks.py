"""MiniLM's Pi bundle on (emulated) ARM64: each sentence at its own length through the TFLite
variant's length signatures, against fp32 torch embeddings computed on the host (issue 30).
Runs inside the ARM64 root with the runtime-only install; no torch.

    python text_checks.py --bundle minilm.ekb --sentences sentences.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--sentences", type=Path, required=True, help="text and reference embeddings (host fp32 torch)")
    args = parser.parse_args()
    from edgekit.runtime import load

    data = np.load(args.sentences)
    runtime = load(args.bundle)
    session = runtime.active.session
    buckets = sorted(getattr(session, "buckets", {}) or ())
    widths = []
    run = session.run

    def spy(feeds):
        widths.append(next(iter(feeds.values())).shape[1])
        return run(feeds)

    session.run = spy
    scores = []
    for text, reference in zip(data["text"], data["embedding"]):
        got = np.asarray(runtime.predict_raw(str(text))["embedding"], np.float64)
        scores.append(float(got @ reference / np.linalg.norm(got) / np.linalg.norm(reference)))
    failed = 0
    ok = runtime.active.info["format"] == "tflite" and len(buckets) >= 2
    print(f"{'PASS' if ok else 'FAIL'} variant {runtime.active.id} with length signatures {buckets}", flush=True)
    failed += not ok
    ok = widths == [int(n) for n in data["tokens"]]
    print(f"{'PASS' if ok else 'FAIL'} each sentence reached the variant at its own length "
          f"({min(widths)}-{max(widths)} tokens, none padded to 128 before it)", flush=True)
    failed += not ok
    ok = np.mean(scores) >= 0.99 and min(scores) >= 0.97
    print(f"{'PASS' if ok else 'FAIL'} {len(scores)} sentences: cosine to fp32 torch mean {np.mean(scores):.4f}, "
          f"min {min(scores):.4f} (bar: mean 0.99, min 0.97)", flush=True)
    failed += not ok
    runtime.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
