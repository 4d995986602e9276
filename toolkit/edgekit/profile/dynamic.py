"""Measured per-op time: onnxruntime's profiler for ONNX, torch.profiler for PyTorch sources.

Runs are profiled after a warm-up and aggregated per node and per op type with the share of the
total. LiteRT's Python interpreter exposes no per-op profiler, so TFLite files get whole-model
timings only (said in the report).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def aggregate_trace(events: list[dict], runs: int) -> dict:
    """Per node and per op type mean microseconds per run, from onnxruntime's trace events."""
    per_node: dict[str, dict] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        op = e.get("args", {}).get("op_name", "?")
        row = per_node.setdefault(name, {"op_type": op, "us": 0.0, "calls": 0,
                                         "provider": e.get("args", {}).get("provider", "")})
        row["us"] += float(e.get("dur", 0))
        row["calls"] += 1
    total = sum(r["us"] for r in per_node.values()) or 1.0
    for row in per_node.values():
        row["us_per_run"] = row["us"] / runs
        row["share"] = row["us"] / total
    by_type: dict[str, dict] = defaultdict(lambda: {"us_per_run": 0.0, "share": 0.0, "nodes": 0})
    for row in per_node.values():
        t = by_type[row["op_type"]]
        t["us_per_run"] += row["us_per_run"]
        t["share"] += row["share"]
        t["nodes"] += 1
    return {"runs": runs, "total_us_per_run": total / runs,
            "nodes": dict(sorted(per_node.items(), key=lambda kv: -kv[1]["us"])),
            "by_op_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]["us_per_run"]))}


def profile_onnx(path: Path, feeds: dict[str, np.ndarray], runs: int = 20, warmup: int = 5,
                 threads: int | None = None, optimized: bool = True) -> dict:
    """Per-op times of ``runs`` runs after ``warmup`` unprofiled-in-the-result runs."""
    from .._quiet import load_onnxruntime

    ort = load_onnxruntime()
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    # ENABLE_ALL is what really runs (fused nodes); BASIC keeps the graph's own nodes and names,
    # so that times join the static analysis node by node.
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    with tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            session.run(None, feeds)
        events = _load(session.end_profiling())
    result = aggregate_trace(_last_runs(events, runs), runs)  # the warm-up runs are cut off
    result["source"] = "onnxruntime profiler" + ("" if optimized else " (basic graph optimisation)")
    return result


def _load(path: str) -> list[dict]:
    with open(path) as fh:
        data = json.load(fh)
    os.unlink(path)
    return data


def _last_runs(events: list[dict], runs: int) -> list[dict]:
    """Events inside the last ``runs`` 'model_run' spans of the trace."""
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    if len(spans) < runs:
        return events
    keep = spans[-runs:]
    return [e for e in events if any(a <= e.get("ts", -1) <= b for a, b in keep)]


def profile_torch(module, example: tuple, runs: int = 10, warmup: int = 3) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        for _ in range(warmup):
            module(*example)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                module(*example)
    rows = {}
    total = 0.0
    for evt in prof.key_averages():
        if not evt.key.startswith("aten::"):
            continue
        us = evt.self_cpu_time_total / runs
        rows[evt.key] = {"us_per_run": us, "calls": evt.count / runs}
        total += us
    for row in rows.values():
        row["share"] = row["us_per_run"] / total if total else 0.0
    return {"runs": runs, "total_us_per_run": total, "source": "torch.profiler (self CPU time of aten ops)",
            "by_op_type": dict(sorted(rows.items(), key=lambda kv: -kv[1]["us_per_run"]))}
