"""The profile command's target estimates against published device latencies.

For each entry of tests/published/models.py (ncnn on a Raspberry Pi 4, Coral's Edge TPU...),
rebuild the model in PyTorch, profile it on this host with `edgekit profile`'s library, and print
estimate / published. Aim: every ratio within 1.5x either way.

    .venv/bin/python benchmarks/profile_estimates.py [--runs 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402,F401
from _common import Goals, print_table  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    from edgekit.models import load_model
    from edgekit.profile import run_profile
    from tests.published.models import PUBLISHED

    cache, rows, within, ratios = {}, [], 0, []
    for name, target, precision, published, source in PUBLISHED:
        key = (name, target)
        if key not in cache:
            print(f"profiling {name} for {target} ...", flush=True)
            cache[key] = run_profile(load_model(f"tests.published.models:{name}"), target=target, runs=args.runs)
        estimate = cache[key]["estimate"]["total_ms"][precision]
        ratio = estimate / published
        ratios.append(ratio)
        ok = 1 / 1.5 <= ratio <= 1.5
        within += ok
        rows.append([name, target, precision, f"{published:.1f}", f"{estimate:.1f}", f"{ratio:.2f}",
                     "yes" if ok else "NO", source])
    print()
    print_table(["model", "target", "precision", "published ms", "estimate ms", "estimate/published", "within 1.5x",
                 "source"], rows)
    print(f"\n{within} of {len(rows)} estimates within 1.5x of the published latency")
    goals = Goals(__file__)
    goals.check(">= 80% of published rows within 1.5x", f"{within} of {len(rows)} ({within / len(rows):.0%})",
                within >= 0.8 * len(rows), baseline="published device latencies")
    worst = max(max(r, 1 / r) for r in ratios)
    goals.check("no row beyond 3x", f"worst {worst:.2f}x", worst <= 3.0, baseline="published device latencies")
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
