"""Bench output: the console table's rows, results.md, and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

from .._io import atomic_directory
from .._plot import pyplot, save
from .runner import BenchResult

COLUMNS = ["artifact", "threads", "batch", "provider", "n", "p50 ms", "p90 ms", "p99 ms", "throughput/s",
           "vs baseline (p90)", "load ms", "first ms", "peak RSS MB", "+RSS MB", "file MB"]


# The console's columns (headers short enough for 120 columns); results.md and --json carry all.
CONSOLE = {"artifact": "artifact", "threads": "threads", "batch": "batch", "provider": "provider", "n": "n",
           "p50 ms": "p50 ms", "p90 ms": "p90 ms", "p99 ms": "p99 ms", "vs baseline (p90)": "p90 vs base",
           "load ms": "load ms", "+RSS MB": "+RSS MB"}


def console_rows(result: BenchResult) -> list[list[str]]:
    keep = [COLUMNS.index(c) for c in CONSOLE]
    return [[row[i] for i in keep] for row in rows(result)]


def rows(result: BenchResult) -> list[list[str]]:
    out = []
    for r in result.results:
        s = r.steady
        provider = r.provider_active + (f" (asked {r.provider_requested})" if r.fell_back else "")
        out.append([r.label, str(r.threads or "auto"), str(r.batch), provider, str(s["n"]),
                    f"{s['p50_ms']:.3f}", f"{s['p90_ms']:.3f}", f"{s['p99_ms']:.3f}", f"{s['throughput_per_s']:.1f}",
                    f"{r.ratio_p90_vs_baseline:.2f}x", f"{r.phases['load_ms']:.1f}",
                    f"{r.phases['first_inference_ms']:.2f}", f"{r.memory['peak_rss_mb']:.0f}",
                    f"{r.memory['increase_mb']:.0f}",
                    f"{r.file_size_bytes / 1e6:.2f}" if r.file_size_bytes else "-"])
    return out


def markdown(result: BenchResult) -> str:
    env = result.environment
    lines = [f"# edgekit bench ({result.device})", "",
             f"{env['cpu_model']}, {env['cores']} cores, governor {env['governor'] or 'unknown'}, "
             f"{env['temperature_c'] if env['temperature_c'] is not None else '?'} °C; "
             + ", ".join(f"{k} {v}" for k, v in env["versions"].items()), "",
             f"Baseline: `{result.baseline}`. "
             + ("Variants were measured interleaved, each in its own process"
                + (", onnxruntime thread spinning off." if not result.spinning else ".")
                if result.interleaved else "One variant, measured in its own process."), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(result)]
    inputs = {r.inputs for r in result.results}
    lines += ["", f"Inputs: {', '.join(sorted(inputs))}. p90 is the headline; p99 is reliable only with >= 662 runs.", ""]
    return "\n".join(lines)


def plots(result: BenchResult, out: Path) -> list[str]:
    plt = pyplot()
    if plt is None:
        return []
    labels = [r.label for r in result.results]
    made = []
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(labels) + 1.8))
    ax.boxplot([r.samples_ms for r in result.results], vert=False, showfliers=True, whis=(1, 99),
               flierprops={"markersize": 2, "alpha": 0.4})
    # A log axis: one 4 ms outlier must not squeeze every 0.1 ms box into the first pixel column.
    ax.set_xscale("log")
    ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
    ax.set_xlabel("latency per run (ms, log scale); boxes p25-p75, whiskers p1-p99, dots beyond")
    ax.set_title("latency distribution per artifact")
    made.append(save(fig, out / "latency_distribution.png"))
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(labels) + 1.8))
    y = range(len(labels))
    ax.barh([i + 0.2 for i in y], [r.steady["p50_ms"] for r in result.results], height=0.4, label="p50")
    ax.barh([i - 0.2 for i in y], [r.steady["p90_ms"] for r in result.results], height=0.4, label="p90")
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.set_xlabel("ms")
    ax.legend()
    ax.set_title("p50 and p90 latency")
    made.append(save(fig, out / "latency_p50_p90.png"))
    return made


def write(result: BenchResult, out: Path) -> None:
    with atomic_directory(out) as tmp:
        result.plots = plots(result, tmp)
        (tmp / "results.json").write_text(json.dumps(result.to_dict(), indent=2))
        (tmp / "results.md").write_text(markdown(result))
