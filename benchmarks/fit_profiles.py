"""Fit each device profile's latency model to published measurements, and write it into the profile.

For every device with published rows (tests/published/latencies.py: ncnn's benchmark README,
Coral's benchmark page, torch2trt's Jetson table), fit the efficiency parameters of
edgekit.profile.fitted on the rows of FIT_MODELS only, score the held-out rows, and write the
result with its provenance as the `[estimator.fit]` table at the end of profiles/<id>.toml.
benchmarks/profile_estimates.py then judges the profiles as shipped.

    .venv/bin/python benchmarks/fit_profiles.py [--dry-run] [--target raspberrypi4]
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402,F401
from _common import print_table  # noqa: E402

MARKER = "# ---- fitted by benchmarks/fit_profiles.py: do not edit by hand below this line ----"

# What each device's fit may move (the rest keeps DeviceFit's defaults or the start values): a
# device with few rows gets few free parameters; tied parameters follow the first free one (the
# published CNNs have too little element-wise work to fit its efficiency apart from conv's;
# accelerators run every kernel kind on one engine).
CPU_FREE = ("conv", "depthwise", "gemm", "memory", "half_mflops", "overhead_us", "parallel")
PLANS = {
    "raspberrypi4": {"free": CPU_FREE + ("int8_speedup",), "tie": ("elementwise",), "start": {}},
    # No trustworthy int8 rows (see latencies.EXCLUDED): int8 at half the sdot peak, i.e. 2x fp32.
    "raspberrypi5": {"free": CPU_FREE, "tie": ("elementwise",), "start": {"int8_speedup": 0.5},
                     "note": "int8_speedup 0.5 is a prior, not fitted (no trustworthy int8 rows)"},
    "android-arm64": {"free": CPU_FREE, "tie": ("elementwise",), "start": {"best_threads": 4}},
    # The Dev Board's Edge TPU hangs off one PCIe Gen2 lane: parameters beyond its 8 MB stream at
    # ~0.5 GB/s (a spec, not fitted: no fit row exceeds 8 MB).
    "coral-edgetpu": {"free": ("conv", "overhead_us"), "tie": ("depthwise", "gemm", "elementwise"),
                      "start": {"threads_apply": False, "onchip_mb": 8.0, "offchip_gbs": 0.5}},
    "jetson-nano": {"free": ("conv", "overhead_us"), "tie": ("depthwise", "gemm", "elementwise"),
                    "start": {"threads_apply": False}},
}


def fit_target(target: str, rows) -> tuple:
    from edgekit._schema import replace

    from edgekit.devices import resolve
    from edgekit.devices.profile import DeviceFit
    from edgekit.profile.fitted import fit_device, score
    from tests.published.graphs import observations

    plan = PLANS[target]
    profile = resolve(target)
    fit_rows = [r for r in rows if r.role == "fit"]
    held = [r for r in rows if r.role == "validate"]
    start = replace(DeviceFit(), **plan["start"])
    fitted = fit_device(observations(fit_rows), profile, start, plan["free"], tie=plan.get("tie", ()))
    on_fit, on_held = score(observations(fit_rows), profile, fitted), score(observations(held), profile, fitted)
    models = sorted({r.model for r in fit_rows})
    fitted = replace(
        fitted, basis="published",
        fitted_on=f"{len(fit_rows)} published rows of {', '.join(models)} "
                  f"({'; '.join(sorted({r.source.split(',')[0] for r in fit_rows}))})"
                  + (f"; {plan['note']}" if plan.get("note") else ""),
        validated_on=f"{len(held)} held-out rows of {', '.join(sorted({r.model for r in held}))}",
        fitted_at=datetime.date.today().isoformat(), expected_error=round(on_held["geomean_error"], 3),
        within_1_5x=f"{on_held['within_1_5x']} of {on_held['rows']} held-out rows")
    return profile, fitted, on_fit, on_held


def write_fit(path: Path, fit) -> None:
    text = path.read_text()
    if MARKER in text:
        text = text[:text.index(MARKER)].rstrip() + "\n"
    text += f"\n{MARKER}\n[estimator.fit]\n{fit.to_toml()}\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dry-run", action="store_true", help="print the fits, write nothing")
    parser.add_argument("--target", action="append", help="only these profiles (default: every one with rows)")
    args = parser.parse_args()
    from tests.published.latencies import ROWS

    table = []
    for target in args.target or list(PLANS):
        rows = [r for r in ROWS if r.target == target]
        print(f"fitting {target} on {sum(r.role == 'fit' for r in rows)} rows ...", flush=True)
        profile, fit, on_fit, on_held = fit_target(target, rows)
        table.append([target, f"{on_fit['within_1_5x']}/{on_fit['rows']}", f"{on_fit['geomean_error']:.2f}",
                      f"{on_held['within_1_5x']}/{on_held['rows']}", f"{on_held['geomean_error']:.2f}",
                      f"{on_held['worst']:.2f}",
                      " ".join(f"{k}={getattr(fit, k):.3g}" for k in PLANS[target]["free"])])
        if not args.dry_run:
            write_fit(Path(profile.path), fit)
    print()
    print_table(["profile", "fit rows within 1.5x", "fit error", "held-out within 1.5x", "held-out error",
                 "held-out worst", "fitted"], table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
