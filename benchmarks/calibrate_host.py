"""`edgekit calibrate` on this host through the agent on loopback, judged on models it never saw.

Calibrates this host (the microbenchmark suite through `edgekit agent serve` on 127.0.0.1), then
for real models the suite never contained - the digits CNN, MiniLM, and the rebuilt MobileNetV2,
ResNet-18 and SqueezeNet - measures their latency through the same agent (1 thread and all
cores, each alone in a continuous loop, lowest median of three passes, as calibrate measures) and compares the calibrated profile's estimate with it. Goal: every
estimate within 1.25x of its measurement. The uncalibrated estimate for this host (the roofline
from derived peaks, no fit) is printed beside it as the baseline.

    .venv/bin/python benchmarks/calibrate_host.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402,F401
from _common import Goals, agent, print_table  # noqa: E402

UNSEEN = ["edgekit:digits-cnn", "edgekit:minilm", "tests.published.models:mobilenetv2",
          "tests.published.models:resnet18", "tests.published.models:squeezenet"]


def export(ref: str, folder: Path):
    """(onnx path, static profile) of a model at batch 1."""
    import onnx

    from edgekit.convert.onnx_export import export_onnx
    from edgekit.data import synthesize
    from edgekit.models import load_model
    from edgekit.profile.static import analyse

    model = load_model(ref)
    path = export_onnx(model, folder / f"{model.name}.onnx").path
    shapes = {k: list(v.shape) for k, v in synthesize(model, n=1).arrays.items()}
    return path, analyse(onnx.load(str(path)), shapes)


def main() -> int:
    from edgekit.devices.profile import DeviceFit
    from edgekit.profile.calibrate import fit, measure
    from edgekit.profile.calibrate import plan as calibration_plan
    from edgekit.profile.fitted import kernels, total_ms

    with tempfile.TemporaryDirectory() as tmp, agent(Path(tmp) / "agent.token", Path(tmp) / "store") as url:
        tmp = Path(tmp)
        token = tmp / "agent.token"
        log = lambda m: print("  " + m, flush=True)  # noqa: E731
        (tmp / "suite").mkdir()
        plan = calibration_plan(url, token, tmp / "suite", progress=log)
        models = {ref: export(ref, tmp) for ref in UNSEEN}
        # The suite and the unseen models in the same passes: a shared machine's neighbours
        # change what two threads get within minutes, and both sides must see the same machine.
        paths = [p for _, _, p in plan.files] + [p for p, _ in models.values()]
        print(f"measuring {len(plan.files)} microbenchmarks and {len(models)} unseen models through the agent at "
              f"{url}, threads {plan.threads}, three passes ...", flush=True)
        measured, _ = measure(url, token, paths, plan.threads, 1.0, lambda m: None, rounds=3)
        profile, _ = fit(plan, {str(p): measured[str(p)] for _, _, p in plan.files}, url, progress=log)
        fitted = profile.estimator.fit
        print(f"fitted: {fitted.within_1_5x} within 1.5x, typical error {fitted.expected_error:.2f}x")
        by_label = {(Path(path).name, n): ms for path, row in measured.items() for n, ms in row.items()}
        rows, worst, worst_raw = [], 1.0, 1.0
        raw = DeviceFit(conv=1.0, depthwise=1.0, gemm=1.0, memory=1.0, elementwise=1.0, half_mflops=1e-9,
                        overhead_us=0.0, parallel=1.0, basis="roofline")
        for ref, (path, static) in models.items():
            ks = kernels(static)
            for n in plan.threads:
                ms = by_label[(path.name, n)]
                est = total_ms(ks, static, profile, fitted, "fp32", n)
                naive = total_ms(ks, static, profile, raw, "fp32", n)
                off, off_raw = max(est / ms, ms / est), max(naive / ms, ms / naive)
                worst, worst_raw = max(worst, off), max(worst_raw, off_raw)
                rows.append([ref.split(":")[-1], n, f"{ms:.3f}", f"{est:.3f}", f"{est / ms:.2f}", f"{naive:.3f}",
                             f"{naive / ms:.2f}", "yes" if off <= 1.25 else "NO"])
    print_table(["unseen model", "threads", "measured ms", "calibrated estimate", "ratio", "uncalibrated roofline",
                 "ratio", "within 1.25x"], rows)
    goals = Goals(__file__)
    goals.check("calibrated estimates of unseen models within 1.25x of measured", f"worst {worst:.2f}x over "
                f"{len(rows)} (model, threads) rows; uncalibrated roofline worst {worst_raw:.2f}x", worst <= 1.25,
                baseline="latency measured through the same agent")
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
