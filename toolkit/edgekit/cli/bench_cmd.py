"""``edgekit bench``: latency and memory, locally or on a remote device through its agent."""

from __future__ import annotations

from pathlib import Path

import click

from .common import console, json_option, print_json, steps, table


def _ints(value: str | None, allow_auto: bool = False):
    if not value:
        return [None] if allow_auto else [1]
    try:
        return [None if (allow_auto and v == "auto") else int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a number or a comma list like 1,2,4") from None


@click.command("bench")
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--threads", help="Intra-op threads; a comma list sweeps (e.g. 1,2,4). Default: the runtime's.")
@click.option("--batch", help="Batch size; a comma list sweeps (e.g. 1,8,32).")
@click.option("--length", help="Sequence length of token inputs (their varying axis 1, synthetic inputs); "
                               "a comma list sweeps, e.g. 8,16,32,128: latency per length bucket.")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt", "xnnpack"]), default="cpu", show_default=True)
@click.option("--strict-provider", is_flag=True, help="Fail when the runtime fell back to another provider.")
@click.option("--input-data", help="Real inputs: .npz with one array per input (else synthetic).")
@click.option("--baseline", help="The artifact ratios are computed against (default: the first).")
@click.option("--warmup-runs", default=10, show_default=True)
@click.option("--min-runs", default=100, show_default=True, help="Steady-state runs at least.")
@click.option("--min-seconds", default=2.0, show_default=True, help="Steady-state seconds at least.")
@click.option("--max-seconds", default=60.0, show_default=True, help="Cap on the steady state.")
@click.option("--device", help="URL of an edgekit agent on the device, e.g. http://pi.local:8765.")
@click.option("--token-file", type=click.Path(path_type=Path), help="The agent's token (with --device).")
@click.option("--out", "out", type=click.Path(path_type=Path), help="Write results.json, results.md and PNG plots here.")
@json_option
def bench_cmd(artifacts, threads, batch, length, provider, strict_provider, input_data, baseline, warmup_runs, min_runs,
              min_seconds, max_seconds, device, token_file, out, as_json):
    """Benchmark .onnx/.tflite files, PyTorch factories or an optimize output directory.

    Each artifact runs in its own process; several are measured interleaved (A B A B ...) and
    compared with the first (or --baseline). Reports load, first inference, warm-up and
    steady-state statistics (p90 is the headline), peak RSS, and the provider that really ran.

    \b
    Example:
      edgekit bench model.onnx model-int8.onnx --threads 1,2
      edgekit bench edgekit-out/digits-cnn-raspberrypi5 --out bench-results
      edgekit bench best.tflite --device http://pi.local:8765 --token-file agent.token
      edgekit bench edgekit-out/minilm-host/best.onnx --length 8,16,32,128   # per sentence length
    """
    from ..bench import BenchOptions, run_bench
    from ..bench.report import CONSOLE, console_rows, write

    options = BenchOptions(threads=_ints(threads, allow_auto=True), batches=_ints(batch),
                           lengths=_ints(length) if length else [None], provider=provider,
                           input_data=input_data, warmup_runs=warmup_runs, min_runs=min_runs,
                           min_seconds=min_seconds, max_seconds=max_seconds, strict_provider=strict_provider,
                           baseline=baseline)
    say, stop = steps()
    try:
        if device:
            from ..agent.client import remote_bench

            result = remote_bench(device, token_file, list(artifacts), options, progress=say)
        else:
            result = run_bench(list(artifacts), options, progress=say)
    finally:
        stop()
    if out:
        write(result, out)
    if as_json:
        print_json(result.to_dict())
        return
    out_console = console()
    env = result.environment
    out_console.print(table(f"bench on {result.device}: {env['cpu_model']} ({env['cores']} cores)", list(CONSOLE.values()), console_rows(result)))
    for r in result.results:
        if r.fell_back:
            out_console.print(f"[yellow]warning:[/yellow] {r.label} asked for {r.provider_requested} "
                              f"but ran on {r.provider_active}")
    out_console.print(f"inputs: {', '.join(sorted({r.inputs for r in result.results}))}"
                      + (f"; results in {out}" if out else ""))
