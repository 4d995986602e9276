"""Profile output: report.md, report.json and PNG charts."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .._io import atomic_directory, to_json
from .._plot import pyplot, save
from .._schema import Document, field, to_dict
from ..devices import host_profile


class ProfileReport(Document, frozen=False):
    """What ``edgekit profile`` found: the static analysis, per-op times on the host, the target
    estimate, compatibility and hints. ``to_dict()`` is report.json; parts a model's format
    cannot give (LiteRT has no per-op profiler) are left out."""

    model: dict  # name, source, format (exported_with for a PyTorch source)
    target: dict  # id, name
    host: str
    inputs: dict  # source, shapes
    schema: str = "edgekit.profile/1"
    static: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)
    measured_fused_total_us: Optional[float] = None
    measured_fused_by_op_type: Optional[dict] = None
    torch_profile: Optional[dict] = None
    host_efficiency: Optional[dict] = None
    estimate: Optional[dict] = None
    compatibility: list[dict] = field(default_factory=list)
    hints: list[dict] = field(default_factory=list)
    limitations: list[str] = field(default_factory=list)
    charts: Optional[list[str]] = None

    def to_dict(self) -> dict:
        data = to_dict(self)
        return {k: v for k, v in data.items() if v is not None and (k != "limitations" or v)}


def _fmt_ms(us):
    return "-" if us is None else f"{us / 1000:.3f}"


def markdown(r: ProfileReport) -> str:
    lines = [f"# edgekit profile: {r.model['name']} ({r.model['format']})", "",
             f"Target: {r.target['name']}. Host: {r.host}. Inputs: {r.inputs['source']} "
             f"{r.inputs['shapes']}.", ""]
    s = r.static
    if "flops" in s:
        lines += [f"- parameters: {s['params']:,}; {s['macs'] / 1e9:.3f} GMACs ({s['flops'] / 1e9:.3f} GFLOPs) per run",
                  "- size by dtype: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in s["size_by_dtype"].items()),
                  f"- peak activation memory: {s['peak_activation_bytes'] / 1e6:.2f} MB (at {s['peak_at']})",
                  f"- measured on the host: {r.measured['total_us_per_run'] / 1000:.2f} ms per run "
                  f"({r.measured['source']}); with onnxruntime's fusions {r.measured_fused_total_us / 1000:.2f} ms", ""]
        lines += ["## Time by op type", "", "| op type | class | nodes | ms/run | share | GFLOPs |", "|---|---|---|---|---|---|"]
        flops = s["by_op_type"]
        for op, row in r.measured["by_op_type"].items():
            lines.append(f"| {op} | {row.get('op_class', '')} | {row['nodes']} | {row['us_per_run'] / 1000:.3f} | "
                         f"{row['share']:.1%} | {flops.get(op, {}).get('flops', 0) / 1e9:.3f} |")
        top = sorted((n for n in s["nodes"] if n["measured_us"]), key=lambda n: -n["measured_us"])[:10]
        lines += ["", "## Top nodes", "", "| node | op | ms/run | share | GFLOPs | intensity | bound on target |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {n['name']} | {n['op_type']} | {_fmt_ms(n['measured_us'])} | {n['share']:.1%} | "
                  f"{n['flops'] / 1e9:.4f} | {n['intensity']:.1f} | {n['bound_on_target']} |" for n in top]
        e = r.estimate
        threads = e.get("by_threads") or {"": e["total_ms"]}
        lines += ["", f"## Estimated latency on {e['target']}", "",
                  "| precision | " + " | ".join(f"{n} threads, ms" if n else "ms" for n in threads) + " |",
                  "|---|" + "---|" * len(threads)]
        lines += [f"| {p} | " + " | ".join(f"{threads[n][p]:.2f}" for n in threads) + " |" for p in e["total_ms"]]
        lines += ["", "Host efficiency per op class (roofline time / measured time): "
                  + ", ".join(f"{k} {v['efficiency']:.0%}" for k, v in r.host_efficiency.items()), "",
                  "Assumptions:"] + [f"- {a}" for a in e["assumptions"]]
    for limitation in r.limitations:
        lines += ["", f"> {limitation}"]
    lines += ["", "## Target compatibility", ""]
    lines += [f"- **{c['severity']}**: {c['what']}: {c['detail']} (fix: {c['fix']})" for c in r.compatibility] or [
        "- nothing found that would not work"]
    lines += ["", "## Bottlenecks and actions", ""] + [f"- {h['finding']} -> **{h['action']}**" for h in r.hints]
    return "\n".join(lines) + "\n"


def charts(r: ProfileReport, out: Path) -> list[str]:
    plt = pyplot()
    if plt is None:
        return []
    made = []
    by_type = r.measured["by_op_type"]
    if by_type:
        items = list(by_type.items())[:15][::-1]
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.5))
        ax.barh([k for k, _ in items], [v["us_per_run"] / 1000 for _, v in items])
        ax.set_xlabel("ms per run (host)")
        ax.set_title(f"{r.model['name']}: time per op type")
        made.append(save(fig, out / "time_by_op_type.png"))
    nodes = [n for n in r.static.get("nodes", []) if n.get("achieved_gflops") and n["intensity"] > 0]
    if nodes:
        import numpy as np

        host = host_profile()
        fig, ax = plt.subplots(figsize=(7, 4.5))
        colours = {"matmul/conv": "tab:blue", "normalisation": "tab:orange", "elementwise": "tab:green",
                   "data movement": "tab:grey", "reduction/pooling": "tab:purple"}
        for cls, colour in colours.items():
            pts = [n for n in nodes if n["op_class"] == cls]
            if pts:
                ax.scatter([n["intensity"] for n in pts], [n["achieved_gflops"] for n in pts], s=14, color=colour, label=cls)
        x = np.logspace(-2, 4, 200)
        ax.plot(x, np.minimum(host.estimator.peak_gflops_fp32, x * host.memory.bandwidth_gbs), color="black",
                linewidth=1, label="host roofline (fp32)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOP/byte)")
        ax.set_ylabel("achieved GFLOP/s")
        ax.set_title("roofline: every op measured on the host")
        ax.legend(fontsize=7)
        made.append(save(fig, out / "roofline.png"))
    return made


def write(r: ProfileReport, out: Path, extra_files: dict[str, Path] | None = None) -> None:
    import shutil

    with atomic_directory(out) as tmp:
        r.charts = charts(r, tmp)
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, tmp / name)
        (tmp / "report.json").write_text(to_json(r.to_dict(), indent=2))
        (tmp / "report.md").write_text(markdown(r))
