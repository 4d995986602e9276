"""``edgekit targets``: the device profiles."""

from __future__ import annotations

import click

from .._schema import to_dict
from ..devices import all_profiles, resolve
from .common import console, json_option, print_json, table


@click.group("targets")
def targets() -> None:
    """Target-device profiles: what edgekit knows about each device.

    \b
    Example:
      edgekit targets list
      edgekit targets show raspberrypi
    """


@targets.command("list")
@json_option
def list_targets(as_json: bool) -> None:
    """List every known target: shipped profiles, EDGEKIT_PROFILES and the host.

    \b
    Example:
      edgekit targets list --json
    """
    profiles = list(all_profiles().values())
    if as_json:
        print_json([to_dict(p) for p in profiles])
        return
    rows = [
        [p.id, ", ".join(p.aliases), p.arch, p.cpu.cores, f"{p.memory.ram_mb / 1024:.0f} GB",
         " > ".join(p.runtimes), " > ".join(p.precisions)]
        for p in profiles
    ]
    console().print(table("Targets", ["name", "aliases", "arch", "cores", "RAM", "runtimes", "precisions"], rows))


@targets.command("show")
@click.argument("name")
@json_option
def show_target(name: str, as_json: bool) -> None:
    """Show one profile in full (by id, alias, or a path to a .toml file).

    \b
    Example:
      edgekit targets show raspberrypi4
      edgekit targets show ./my-board.toml --json
    """
    profile = resolve(name)
    data = to_dict(profile)
    if as_json:
        print_json(data)
        return
    out = console()
    out.print(f"[bold]{profile.name}[/bold]  ({profile.id}; aliases: {', '.join(profile.aliases) or '-'})")
    out.print(f"file: {profile.path}")
    cpu, mem, est, con = profile.cpu, profile.memory, profile.estimator, profile.constraints
    rows = [
        ["arch", profile.arch],
        ["cpu", f"{cpu.cores}x {cpu.core} @ {cpu.max_ghz} GHz"],
        ["isa", " ".join(cpu.isa) or "-"],
        ["memory", f"{mem.ram_mb} MB, {mem.bandwidth_gbs} GB/s"],
        ["accelerators", "; ".join(
            f"{a.kind}: {a.name} ({', '.join(a.dtypes)}{f', {a.tops} TOPS' if a.tops else ''})"
            for a in profile.accelerators) or "-"],
        ["runtimes", " > ".join(profile.runtimes)],
        ["precisions", " > ".join(profile.precisions)],
        ["constraints", ", ".join(f"{k}={v}" for k, v in to_dict(con).items() if v not in (None, False)) or "-"],
        ["peaks", f"fp32 {est.peak_gflops_fp32:g} GFLOP/s, fp16 {est.peak_gflops_fp16:g} GFLOP/s, "
                  f"int8 {est.peak_gops_int8:g} GOP/s"],
        ["ridge point", f"{profile.ridge_point_fp32:.1f} FLOP/byte (fp32)"],
    ]
    if est.fit is not None:
        from ..profile.fitted import basis, describe

        rows.append(["latency model", describe(basis(est.fit))])
    out.print(table(None, ["field", "value"], rows))
    out.print(table("Sources", ["what", "reference"], [[s.what, s.ref] for s in profile.sources]))
    if profile.notes:
        out.print(profile.notes.strip())
