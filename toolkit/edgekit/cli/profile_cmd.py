"""``edgekit profile``: bottlenecks, roofline, target estimate; or py-spy over a whole pipeline."""

from __future__ import annotations

from pathlib import Path

import click

from .common import console, input_option, json_option, print_json, steps, table


@click.command("profile", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--target", "-t", default="host", show_default=True, help="Target profile for the estimate.")
@click.option("--data", help="Inputs (.npz or module:function); default: the model's own data, else synthetic.")
@click.option("--runs", default=20, show_default=True, help="Profiled runs after warm-up.")
@click.option("--threads", type=int, help="Intra-op threads for the measured runs.")
@click.option("--pyspy", is_flag=True, help="Record 'edgekit profile --pyspy -- COMMAND...' with py-spy instead.")
@click.option("--out", "out", type=click.Path(path_type=Path), help="Write report.md, report.json and PNG charts here.")
@input_option
@json_option
def profile_cmd(args, target, data, runs, threads, pyspy, out, inputs, as_json):
    """Find where time and memory go in MODEL, estimate its latency on a target, and say what to do.

    Static analysis (FLOPs, bytes, intensity, peak activation memory), per-op time from
    onnxruntime's profiler (and torch.profiler for PyTorch sources), a roofline against the
    target profile calibrated on this host, compatibility checks and hints.

    \b
    Example:
      edgekit profile edgekit:minilm --target raspberrypi
      edgekit profile model.onnx --target coral-edgetpu --out prof/
      edgekit profile --pyspy --out spy/ -- python my_app.py --images data/
    """
    if pyspy:
        from ..profile.pyspy import record

        result = record(list(args), out or Path("edgekit-pyspy"))
        if as_json:
            print_json(result)
            return
        c = console()
        c.print(f"{result['samples']} samples; {result['runtime_share']:.0%} inside the model runtime, "
                f"{result['python_share']:.0%} in Python and everything else")
        c.print(table("Top functions by own time", ["function", "share"],
                      [[r["function"][:100], f"{r['share']:.1%}"] for r in result["top_own"]]))
        c.print(f"flame graph: {(out or Path('edgekit-pyspy')) / 'flamegraph.svg'}; speedscope: profile.speedscope.json")
        return
    if len(args) > 1:
        raise click.UsageError(f"one MODEL at most (got {' '.join(args)}); py-spy mode needs --pyspy")
    from ..profile import run_profile
    from ..profile.report import write

    say, stop = steps()
    try:
        report = run_profile(args[0] if args else None, target=target, data=data, runs=runs, inputs=inputs,
                             threads=threads, progress=say)
    finally:
        stop()
    if out:
        write(report, out)
    if as_json:
        print_json(report.to_dict())
        return
    _print(report, out)


def _print(r, out) -> None:
    c = console()
    s = r.static
    c.print(f"[bold]{r.model['name']}[/bold] on {r.target['id']} (inputs: {r.inputs['source']})")
    if "flops" in s:
        c.print(f"{s['params']:,} parameters, {s['macs'] / 1e9:.3f} GMACs per run, peak activations "
                f"{s['peak_activation_bytes'] / 1e6:.2f} MB; host {r.measured['total_us_per_run'] / 1000:.2f} ms "
                f"(profiled, per-node), {r.measured_fused_total_us / 1000:.2f} ms with fusions")
        rows = [[op, row.get("op_class", ""), row["nodes"], f"{row['us_per_run'] / 1000:.3f}", f"{row['share']:.1%}"]
                for op, row in list(r.measured["by_op_type"].items())[:10]]
        c.print(table("Time by op type (host)", ["op type", "class", "nodes", "ms/run", "share"], rows))
        e = r.estimate
        threads = e.get("by_threads") or {"": e["total_ms"]}
        c.print(table(f"Estimated latency on {e['target']}",
                      ["precision"] + [f"{n} thread{'s' if n != '1' else ''} ms" if n else "ms" for n in threads],
                      [[p] + [f"{threads[n][p]:.2f}" for n in threads] for p in e["total_ms"]]))
        c.print("estimate basis: " + "; ".join(e["assumptions"]))
    else:
        c.print(f"{s['params']:,} parameters; host {r.measured['total_us_per_run'] / 1000:.3f} ms per run")
        for limitation in r.limitations:
            c.print(f"[yellow]note:[/yellow] {limitation}")
    for issue in r.compatibility:
        c.print(f"[red]{issue['severity']}[/red]: {issue['what']}: {issue['detail']} (fix: {issue['fix']})")
    for h in r.hints:
        c.print(f"[bold]hint:[/bold] {h['finding']} -> {h['action']}")
    if out:
        c.print(f"report: {out / 'report.md'}")
