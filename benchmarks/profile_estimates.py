"""The shipped profiles' latency estimates against published device latencies.

For every row of tests/published/latencies.py (ncnn on Raspberry Pi 4/5 and a Snapdragon 8 Gen 2,
Coral's Edge TPU, TensorRT on a Jetson Nano), rebuild the model in PyTorch, analyse its graph
and estimate it with the target profile's fitted device model as shipped (no host timing: the
estimate is the same on every machine). Prints estimate / published per row, marking which rows
the fit saw and which it never did. Goals: >= 80% of held-out rows within 1.5x; no row beyond 3x.

    .venv/bin/python benchmarks/profile_estimates.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402,F401
from _common import Goals, print_table  # noqa: E402


def main() -> int:
    from edgekit.devices import resolve
    from edgekit.profile.fitted import kernels, total_ms
    from tests.published.graphs import static_profile
    from tests.published.latencies import ROWS

    rows, held, within_held, worst = [], 0, 0, 1.0
    for row in ROWS:
        profile = resolve(row.target)
        fit = profile.estimator.fit
        if fit is None:
            print(f"{row.target} has no fitted model: run benchmarks/fit_profiles.py")
            return 1
        static = static_profile(row.model)
        estimate = total_ms(kernels(static), static, profile, fit, row.precision, row.threads)
        ratio = estimate / row.ms
        off = max(ratio, 1 / ratio)
        worst = max(worst, off)
        if row.role == "validate":
            held += 1
            within_held += off <= 1.5
        rows.append([row.model, row.target, row.precision, row.threads, row.role, f"{row.ms:.1f}", f"{estimate:.1f}",
                     f"{ratio:.2f}", "yes" if off <= 1.5 else "NO"])
    print_table(["model", "target", "precision", "threads", "row", "published ms", "estimate ms",
                 "estimate/published", "within 1.5x"], rows)
    fit_rows = len(rows) - held
    within_fit = sum(r[-1] == "yes" for r in rows) - within_held
    print(f"\nheld-out rows (architectures the fit never saw): {within_held} of {held} within 1.5x; "
          f"fit rows: {within_fit} of {fit_rows}")
    goals = Goals(__file__)
    goals.check(">= 80% of held-out published rows within 1.5x", f"{within_held} of {held} ({within_held / held:.0%})",
                within_held >= 0.8 * held, baseline="published device latencies")
    goals.check("no row beyond 3x", f"worst {worst:.2f}x", worst <= 3.0, baseline="published device latencies")
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
