"""``edgekit calibrate``: a profile whose latency model is fitted to the device's own measurements."""

from __future__ import annotations

from pathlib import Path

import click

from .common import console, json_option, print_json, table
from .._io import atomic_write_bytes
from ..errors import EdgekitError


@click.command("calibrate")
@click.option("--device", required=True, help="URL of the edgekit agent on the device, e.g. http://pi.local:8765.")
@click.option("--token-file", required=True, type=click.Path(path_type=Path), help="The agent's token.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="The profile to write (.toml).")
@click.option("--base", help="Profile whose facts (peaks, cores, memory) to start from; default: derived from "
                             "the CPU the agent reports.")
@click.option("--id", "profile_id", help="The new profile's id (default: the file's name).")
@click.option("--quick", is_flag=True, help="A smaller suite (about a third): a rough fit in a fraction of the time.")
@click.option("--seconds", default=0.5, show_default=True, help="Steady-state seconds per microbenchmark at least.")
@click.option("--force", is_flag=True, help="Replace --out if it exists (only a profile edgekit calibrate wrote).")
@json_option
def calibrate_cmd(device, token_file, out, base, profile_id, quick, seconds, force, as_json):
    """Fit a device's latency model to microbenchmarks run on it through its agent.

    Convolutions, depthwise convolutions, matmuls, element-wise ops and a chain of tiny ops, at
    several sizes, fp32 and int8, with 1 thread and all the device's cores: the fitted model is
    written as a profile that every command takes with --target ./FILE.toml.

    \b
    Example:
      edgekit calibrate --device http://pi.local:8765 --token-file agent.token --out myboard.toml --base raspberrypi4
      edgekit optimize --target ./myboard.toml
    """
    from ..profile.calibrate import calibrate

    if out.suffix != ".toml":
        raise EdgekitError(f"--out {out} must end in .toml", "profiles are TOML files, e.g. --out myboard.toml")
    if out.exists() and not (force and "basis = \"calibrated\"" in out.read_text(errors="replace")):
        raise EdgekitError(f"{out} exists", "pass --force to replace a profile edgekit calibrate wrote, or pick another --out")
    c = console()
    with c.status("calibrating") as status:
        profile, summary = calibrate(device, token_file, base=base, profile_id=profile_id or out.stem, quick=quick,
                                     seconds=seconds, progress=lambda m: status.update(m))
    text = ("# Written by edgekit calibrate: the device's facts from "
            f"{base or 'its agent'}, its latency model fitted to its own microbenchmarks.\n" + profile.to_toml())
    atomic_write_bytes(out, text.encode())
    summary["profile"] = str(out)
    if as_json:
        print_json(summary)
        return
    fit = summary["fit"]
    rows = [[m["label"], f"{m['measured_ms']:.3f}", f"{m['estimate_ms']:.3f}", f"{m['estimate_ms'] / m['measured_ms']:.2f}"]
            for m in summary["microbenchmarks"]]
    c.print(table("Microbenchmarks on the device", ["graph", "measured ms", "fitted ms", "ratio"], rows))
    c.print(table("Fitted device model", ["parameter", "value"],
                  [[k, f"{fit[k]:.4g}"] for k in ("conv", "depthwise", "gemm", "memory", "half_mflops", "overhead_us",
                                                   "parallel", "int8_speedup")]))
    c.print(f"wrote {out}: {fit['within_1_5x']} within 1.5x, typical error {fit['expected_error']:.2f}x. "
            f"Use it with --target ./{out.name}")
