"""Does interleaving distort a comparison? edgekit bench's ratio of two models measured
interleaved (one process each, spinning off) against the ratio of separate, isolated runs.

Two ONNX models of very different cost (one Linear 256 vs six Linear 1024). Goal: the two
ratios agree within 0.75-1.33x. (Moved here from the test suite: a timing ratio is a property
of the machine's noise, and must not gate a commit.)

    .venv/bin/python benchmarks/bench_interleaving.py [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import sys

import _common  # noqa: F401
from _common import Goals, scratch


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()

    from edgekit.bench import BenchOptions, run_bench
    from edgekit.convert.onnx_export import export_onnx
    from edgekit.models import load_model

    work = scratch("bench-interleaving-")
    src = work / "m.py"
    src.write_text("import torch\n"
                   "def small():\n    return torch.nn.Sequential(torch.nn.Linear(256, 256)).eval(), (torch.randn(1, 256),)\n"
                   "def big():\n    return torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(6)]).eval(), "
                   "(torch.randn(1, 1024),)\n")
    small = export_onnx(load_model(f"{src}:small"), work / "small.onnx").path
    big = export_onnx(load_model(f"{src}:big"), work / "big.onnx").path
    opts = dict(min_runs=100, min_seconds=args.seconds, threads=[1])
    both = run_bench([str(big), str(small)], BenchOptions(**opts))
    interleaved = both.results[1].steady["p50_ms"] / both.results[0].steady["p50_ms"]
    alone = [run_bench([str(p)], BenchOptions(**opts)).results[0].steady["p50_ms"] for p in (big, small)]
    isolated = alone[1] / alone[0]
    agreement = interleaved / isolated
    print(f"small/big p50 ratio: interleaved {interleaved:.4f}, isolated {isolated:.4f}")
    goals = Goals(__file__)
    goals.check("interleaved ratio within 0.75-1.33x of the isolated one", f"{agreement:.2f}x",
                0.75 < agreement < 1.33, baseline="separate isolated runs")
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
