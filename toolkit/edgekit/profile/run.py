"""Put the profile together: static analysis, measured per-op time, roofline, estimate,
compatibility and hints."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .._schema import replace
from ..data import load_data, synthesize
from ..devices import host_profile, resolve
from ..models import describe, load_model
from ..spec import Model
from .compat import check
from .dynamic import profile_onnx, profile_torch
from .hints import hints
from .report import ProfileReport
from .fitted import with_fit
from .roofline import bound, estimate, host_efficiency, roofline_ms
from .static import analyse


def _feeds(model: Model, data: Optional[str]) -> tuple[dict[str, np.ndarray], str]:
    """One batch-1 sample: real when there is data (a text model on random ids misleads)."""
    if data:
        ds = load_data(data, model, limit=1)
    else:
        ds = model.builtin_data("eval")
    if ds is not None and len(ds) and ds.lengths is not None:
        # sentences at their own lengths: the one of median length stands for them
        index = int(np.argsort(ds.lengths, kind="stable")[len(ds) // 2])
        return ds.feeds(index, index + 1), f"{ds.source}: the sentence of median length, {int(ds.lengths[index])} tokens"
    if ds is not None and len(ds):
        return {k: v[:1] for k, v in ds.arrays.items()}, ds.source
    return synthesize(model, n=1).arrays, "synthetic inputs"


def run_profile(model_ref: str | Model | None = None, target: str = "host", data: Optional[str] = None,
                runs: int = 20, inputs: tuple[str, ...] = (), threads: Optional[int] = None,
                progress: Callable[[str], None] = lambda m: None) -> ProfileReport:
    model = model_ref if isinstance(model_ref, Model) else load_model(model_ref, inputs)
    profile = resolve(target)
    host = host_profile()
    feeds, feed_source = _feeds(model, data)
    report = ProfileReport(model={"name": model.name, "source": model.source, "format": model.format},
                           target={"id": profile.id, "name": profile.name}, host=host.name,
                           inputs={"source": feed_source, "shapes": {k: list(v.shape) for k, v in feeds.items()}})
    if model.format == "tflite":
        return _tflite(model, feeds, report, runs)
    with tempfile.TemporaryDirectory() as tmp:
        if model.is_torch:
            from ..convert.onnx_export import export_onnx

            progress("exporting to ONNX for the static analysis")
            path = export_onnx(model, Path(tmp) / "model.onnx").path
            report.model["exported_with"] = "torch.onnx.export"
        else:
            path = model.path
        import onnx

        proto = onnx.load(str(path))
        progress("static analysis")
        static = analyse(proto, {k: list(v.shape) for k, v in feeds.items()})
        progress("profiling per op (onnxruntime)")
        measured = profile_onnx(path, feeds, runs=runs, threads=threads, optimized=False)
        fused = profile_onnx(path, feeds, runs=max(runs // 2, 5), threads=threads, optimized=True)
        torch_profile = None
        if model.is_torch:
            progress("profiling per op (torch.profiler)")
            import torch

            example = tuple(torch.from_numpy(feeds[s.name]) for s in model.inputs)
            torch_profile = profile_torch(model.module, example, runs=max(runs // 2, 5))
        model_bytes = path.stat().st_size
    measured_us = {name: row["us_per_run"] for name, row in measured["nodes"].items()}
    efficiency = host_efficiency(static, measured_us, host)
    est = with_fit(estimate(static, profile, efficiency), static, profile)
    for name, row in measured["by_op_type"].items():
        row["op_class"] = next((n.op_class for n in static.nodes if n.op_type == name), "")
    nodes = []
    for node in static.nodes:
        t = measured_us.get(node.name)
        nodes.append(node.to_dict() | {
            "measured_us": t, "share": measured["nodes"].get(node.name, {}).get("share"),
            "achieved_gflops": (node.flops / (t * 1e3)) if t and node.flops else None,
            "host_roofline_ms": roofline_ms(node, host), "bound_on_target": bound(node, profile)})
    return replace(report, static=static.to_dict() | {"nodes": nodes, "model_bytes": model_bytes},
                   measured=measured, measured_fused_total_us=fused["total_us_per_run"],
                   measured_fused_by_op_type=fused["by_op_type"], torch_profile=torch_profile,
                   host_efficiency=efficiency, estimate=est, compatibility=check(static, proto, profile, model_bytes),
                   hints=hints(static, measured, profile, est))


def _tflite(model: Model, feeds, report: ProfileReport, runs: int) -> ProfileReport:
    """LiteRT's Python API exposes no per-op profiler: whole-model time and the op list."""
    import time

    from ..formats import open_session

    session = open_session(model.path, model=model)
    call = session.bind(feeds)
    for _ in range(5):
        call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e6)
    info = describe(model)
    return replace(report, static={"params": info["parameters"], "size_by_dtype": info["parameters_by_dtype"],
                                   "ops": info["ops"], "model_bytes": model.path.stat().st_size},
                   measured={"total_us_per_run": float(np.median(times)), "source": "LiteRT whole-model timing",
                             "by_op_type": {}, "nodes": {}},
                   limitations=["LiteRT's Python interpreter has no per-op profiler: per-op times, the roofline "
                                "and the target estimate need the ONNX or PyTorch source"])
