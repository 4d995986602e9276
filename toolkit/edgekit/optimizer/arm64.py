"""`optimize --verify-arm64`: the passing candidates judged again on ARM64 kernels under QEMU
(edgekit.emulation.verify runs them), with the guard's metrics and tolerance."""

from __future__ import annotations

from typing import Callable

from ..formats import open_session
from ..emulation import verify as arm
from .accuracy import compare, verdict


def verify(opt, outcomes, samples: int, progress: Callable[[str], None]) -> dict:
    """Run the passing candidates on ARM64 and reject those whose numerics fail there; returns
    the summary for the report. ``opt`` is the pipeline's Optimizer (model, data, reference)."""
    passing = [o for o in outcomes if o.status == "passed"]
    cpu = arm.target_cpu(opt.target)
    sample = opt.eval.head(samples)
    n = len(sample)
    reference = [r[:n] for r in opt.reference]
    summary = {"cpu": cpu, "samples": n, "variants": {}}
    if not passing:
        return summary
    results = arm.run_on_arm({o.candidate.id: o.path for o in passing}, sample.arrays,
                             [s.name for s in opt.model.inputs], cpu, progress)
    for o in passing:
        row: dict = {"cpu": cpu, "samples": n}
        result = results[o.candidate.id]
        if isinstance(result, str):
            row.update(passed=False, error=result)
            o.status, o.reason = "rejected", f"fails on ARM64 ({cpu}): {result.splitlines()[0][:200]}"
        else:
            x86 = open_session(o.path, opt.options, opt.model).run_batched(sample.arrays)
            vs_x86 = compare(x86, result, None, opt.model.task)  # the same file's outputs on x86
            metrics = compare(reference, result, sample.labels, opt.model.task)
            ok, why = verdict(metrics, opt.tolerance)
            row.update(passed=ok, max_abs_diff_vs_x86=vs_x86["max_abs_error"],
                       top1_agreement_vs_x86=vs_x86.get("top1_agreement"), metrics_on_arm=metrics)
            if not ok:
                o.status, o.reason = "rejected", f"ARM64 numerics ({cpu}, {n} samples): {why}"
        o.build = dict(o.build, arm64=row)
        summary["variants"][o.candidate.id] = row
    return summary
