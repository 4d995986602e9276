"""``edgekit test``: data expectations, memorisation, hard cases, regression, the report card."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import ReportedError, console, json_option, print_json, table


@click.group("test")
def test_group() -> None:
    """Model tests before a model (or a retrained one) ships.

    \b
    Example:
      edgekit test expect suggest --data reference.npz > suite.toml
      edgekit test expect run suite.toml --data new.npz
      edgekit test card candidate.ekb --baseline current.ekb --data eval.npz --out card/
    """


@test_group.group("expect")
def expect_group() -> None:
    """Data expectations: completeness, validity, consistency, timeliness, integrity, accuracy.

    \b
    Example:
      edgekit test expect suggest --data reference.npz --key key > suite.toml
      edgekit test expect run suite.toml --data logs.npz --out expect-report/
    """


@expect_group.command("suggest")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Reference data (.npz, Parquet).")
@click.option("--key", help="A row key column: labels are then also checked against this data by key.")
@click.option("--name", help="The suite's name (default: the data file's).")
def suggest_cmd(data, key, name):
    """Propose a suite (TOML, on stdout) from reference data, to read and edit.

    \b
    Example:
      edgekit test expect suggest --data reference.npz > suite.toml
    """
    from ..testing import suggest

    click.echo(suggest(data, name=name, key=key).to_toml())


@expect_group.command("run")
@click.argument("suite", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Data to check (.npz, Parquet, export).")
@click.option("--out", type=click.Path(path_type=Path), help="Write result.json and result.md here.")
@click.option("--chunk", default=65536, show_default=True, help="Rows per pass.")
@json_option
def run_cmd(suite, data, out, chunk, as_json):
    """Check data against a suite: each expectation with its observed value; exit 1 on failures.

    \b
    Example:
      edgekit test expect run suite.toml --data new.npz --out expect-report/
    """
    from .._io import atomic_directory
    from ..testing import Suite, run_suite

    result = run_suite(Suite.load(suite), data, chunk)
    if out:
        with atomic_directory(out) as tmp:
            (tmp / "result.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
            (tmp / "result.md").write_text(result.markdown())
    if as_json:
        print_json(result.to_dict())
    else:
        rows = [[o.dimension, o.kind, o.column or "-", o.expected, str(o.observed), "pass" if o.success else "FAIL"]
                for o in sorted(result.outcomes, key=lambda o: o.success)]
        console().print(table(f"{result.suite} on {data} ({result.rows} rows)",
                              ["dimension", "expectation", "column", "expected", "observed", "result"], rows))
        console().print(f"{len(result.outcomes) - len(result.failed())} of {len(result.outcomes)} expectations met")
    if not result.success:
        raise ReportedError(f"{len(result.failed())} expectation(s) failed")
