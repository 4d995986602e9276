"""What every command shares: error reporting, --json output, tables and reusable options."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from .._io import to_json
from ..errors import EdgekitError
from . import specs


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


# Modules the core install leaves to an extra: (the package to install, the extra that brings it).
OPTIONAL_MODULES = {"onnx": ("onnx", "optimize"), "onnxruntime": ("onnxruntime", "onnxruntime"),
                    "torch": ("torch", "convert"), "ai_edge_litert": ("ai-edge-litert", "litert"),
                    "onnxscript": ("onnxscript", "convert"), "onnxconverter_common": ("onnxconverter-common", "convert"),
                    "starlette": ("starlette", "serve"), "uvicorn": ("uvicorn", "serve"),
                    "scipy": ("scipy", "monitor"), "matplotlib": ("matplotlib", "report"),
                    "pyarrow": ("pyarrow", "serve"), "PIL": ("pillow", "serve"), "tokenizers": ("tokenizers", "serve"),
                    "duckdb": ("duckdb", "collector")}


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
            extra = OPTIONAL_MODULES.get((exc.name or "").split(".")[0]) \
                if isinstance(exc, ModuleNotFoundError) else None
            if extra is not None:  # a device install (edgekit[litert]) reached for the toolkit
                raise ReportedError(f"this needs the Python package '{extra[0]}', which is not installed (install "
                                    f"it with: pip install 'edgekit[{extra[1]}]')") from None
            if debug_enabled(ctx):
                raise ReportedError(f"unexpected {type(exc).__name__}: {exc}") from None
            raise ReportedError(
                f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"
            ) from None


class FiniteFloat(click.FloatRange):
    """click's FloatRange, which lets NaN through every bound (NaN compares false): refused here."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(func)


def input_option(func):
    return click.option(
        "--input", "inputs", multiple=True, type=specs.INPUT, metavar="NAME:SHAPE[:DTYPE][:=VALUE]",
        help="Name and shape of a model input, e.g. input_ids:batchx128:int64 (named dims are "
        "dynamic), or a fixed value fed with every call, e.g. sr:int64:=16000. Repeat for each input.",
    )(func)


def interface_options(func):
    """--batch-axis and --state: inputs that are not batch first, and recurrent state."""
    func = click.option("--state", "states", multiple=True, type=specs.STATE, metavar="IN=OUT",
                        help="A recurrent state: output OUT is fed back into input IN along each sequence "
                             "(found by name, e.g. state=stateN, when not given).")(func)
    return click.option("--batch-axis", "batch_axes", multiple=True, type=specs.BATCH_AXIS, metavar="NAME:AXIS",
                        help="The batch axis of an input when it is not the model's named batch dim, e.g. "
                             "state:1, or NAME:none for an input fed as it is.")(func)


def force_option(func):
    return click.option("--force", is_flag=True, help="Replace an existing output file.")(func)


@contextlib.contextmanager
def output_file(out: Path, force: bool):
    """A staging path beside ``out``, moved into place only on success; an existing ``out`` is
    replaced only with --force (it may be the user's own file)."""
    if out.is_dir():
        raise ReportedError(f"--out {out} is a directory; give a file path")
    if out.exists() and not force:
        raise ReportedError(f"--out {out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.{os.getpid()}.partial{out.suffix}")
    try:
        yield staged
        os.replace(staged, out)
    finally:
        staged.unlink(missing_ok=True)


def print_json(data: Any) -> None:
    click.echo(to_json(data, indent=2))


def console():
    from rich.console import Console

    # A wide fallback keeps tables readable when stdout is a pipe or a CI log.
    return Console(width=None if sys.stdout.isatty() else 120, highlight=False)


def steps(stream=None):
    """Progress of a long command's steps on stderr; returns (say, stop). On a terminal, a spinner
    with the step and its elapsed time; in a pipe or a log file, one line per step with the time
    since the start, so that `edgekit optimize ... > log 2>&1` shows what it is doing."""
    stream = stream or sys.stderr
    if not stream.isatty():
        import time

        started, last = time.monotonic(), [None]

        def say(msg: str) -> None:
            if msg != last[0]:  # a step may be announced again (a check for Ctrl-C): one line
                last[0] = msg
                print(f"[{time.monotonic() - started:7.1f} s] {msg}", file=stream, flush=True)

        return say, lambda: None
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=Console(file=stream), transient=True)
    task = progress.add_task("starting", total=None)
    progress.start()
    return (lambda msg: progress.update(task, description=msg)), progress.stop


def table(title: str | None, columns: list[str], rows: list[list[Any]]):
    """A rich table that stays readable in 120 columns: short values (numbers, provider names)
    and every header word keep their full width; headers wrap at spaces; only long free text
    (names, reasons) wraps, never a number or a header cut to 'threa...'."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    cells = [["" if v is None else str(v) for v in row] for row in rows]
    t = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
              show_edge=False, padding=(0, 1), collapse_padding=True)
    for i, col in enumerate(columns):
        values = [row[i] for row in cells if i < len(row)]
        short = [len(v) for v in values if len(v) <= 14]
        width = max([len(w) for w in col.split()] + short + [1])
        longest = max((len(v) for v in values), default=1)
        if i == 0:  # the name column: whole names where they fit in a quarter of the width
            width = max(width, min(longest, 30))
        # A name column that fits is kept out of rich's shrinking: when rich shrank it below its
        # min_width, the table came out wider than the console and the last column lost words.
        t.add_column(col, min_width=width, overflow="fold", no_wrap=i == 0 and longest <= 30)
    for row in cells:  # plain text: a label such as 'best.onnx [len8]' is not rich markup
        t.add_row(*(Text(c) for c in row))
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
