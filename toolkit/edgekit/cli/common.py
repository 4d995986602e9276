"""What every command shares: error reporting, --json output, tables and reusable options."""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import click

from ..errors import EdgekitError


def debug_enabled(ctx: click.Context | None = None) -> bool:
    if os.environ.get("EDGEKIT_DEBUG", "") not in ("", "0"):
        return True
    ctx = ctx or click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    return bool(root and root.obj and root.obj.get("debug"))


class ReportedError(click.ClickException):
    """Printed as one line, ``error: ...``, exit code 1."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.message}", err=True)


class EdgekitGroup(click.Group):
    """Turns library errors into one line and exit 1; tracebacks only with --debug."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except EdgekitError as exc:
            if debug_enabled(ctx):
                traceback.print_exc()
            raise ReportedError(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("error: interrupted; nothing was written", err=True)
            sys.exit(130)
        except Exception as exc:
            if debug_enabled(ctx):
                traceback.print_exc()
                raise ReportedError(f"unexpected {type(exc).__name__}: {exc}") from None
            raise ReportedError(
                f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"
            ) from None


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(func)


def input_option(func):
    return click.option(
        "--input", "inputs", multiple=True, metavar="NAME:SHAPE[:DTYPE]",
        help="Name and shape of a model input, e.g. input_ids:batchx128:int64 (named dims are "
        "dynamic). Repeat for each input.",
    )(func)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def console():
    from rich.console import Console

    # A wide fallback keeps tables readable when stdout is a pipe or a CI log.
    return Console(width=None if sys.stdout.isatty() else 120, highlight=False)


def table(title: str | None, columns: list[str], rows: list[list[Any]]):
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    for i, col in enumerate(columns):
        t.add_column(col, no_wrap=(i == 0))  # names stay whole; long text wraps instead
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    return t


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def human_count(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))
