"""``edgekit test``: data expectations, memorisation, hard cases, regression, the report card."""

from __future__ import annotations

from pathlib import Path

import click

from .._io import atomic_directory, to_json
from .common import FiniteFloat, ReportedError, console, json_option, print_json, table


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
@click.option("--chunk", default=65536, show_default=True, type=click.IntRange(min=1), help="Rows per pass.")
@json_option
def run_cmd(suite, data, out, chunk, as_json):
    """Check data against a suite: each expectation with its observed value; exit 1 on failures.

    \b
    Example:
      edgekit test expect run suite.toml --data new.npz --out expect-report/
    """
    from ..testing import Suite, run_suite

    result = run_suite(Suite.load(suite), data, chunk)
    if out:
        with atomic_directory(out) as tmp:
            (tmp / "result.json").write_text(to_json(result.to_dict(), indent=2))
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


@test_group.command("memorize")
@click.argument("factory")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Training data with labels (.npz).")
@click.option("--loss", default="cross_entropy", show_default=True, help="cross_entropy, mse or module:function.")
@click.option("--samples", default=16, show_default=True, help="The batch to memorise (8-32).")
@click.option("--steps", default=300, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=1e-2, show_default=True, type=FiniteFloat(min=0, min_open=True, max=10))
@click.option("--out", type=click.Path(path_type=Path), help="Folder for the loss curve (memorize_loss.png).")
@json_option
def memorize_cmd(factory, data, loss, samples, steps, lr, out, as_json):
    """Train a fresh copy on a tiny batch: it must memorise it. Catches frozen or detached layers,
    broken losses, and labels that do not fit their inputs. Needs torch.

    \b
    Example:
      edgekit test memorize mynet.py:build --data train.npz --out memorize/
    """
    from ..testing.memorize import memorize

    result = memorize(factory, data, loss=loss, samples=samples, steps=steps, lr=lr, out=out)
    if as_json:
        print_json(result.to_dict())
    else:
        console().print(f"{result.model}: {'PASS' if result.passed else 'FAIL'} after {result.steps} steps, final "
                        f"loss {result.losses[-1]:.4g}" + (f", batch accuracy {result.train_accuracy:.0%}, held-out "
                        f"{result.holdout_accuracy:.0%} (chance {result.chance:.0%})" if result.holdout_accuracy
                        is not None else "") + (f"; curve: {result.plot}" if result.plot else ""))
        for reason in result.reasons:
            console().print(f"  [red]x[/red] {reason}")
    if not result.passed:
        raise click.exceptions.Exit(1)


@test_group.command("hardcases")
@click.argument("model")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Labelled evaluation data.")
@click.option("--labels", "labels_column", help="The labels column (default: labels or label).")
@click.option("--top", default=200, show_default=True, type=click.IntRange(min=1), help="Examples per criterion.")
@click.option("--baseline", help="Another version of the model: adds the largest loss increases.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The suite (.npz).")
@json_option
def hardcases_cmd(model, data, labels_column, top, baseline, out, as_json):
    """Find the hardest examples (highest loss, largest loss change against a baseline, largest
    input gradient for PyTorch models) and save them with their provenance.

    \b
    Example:
      edgekit test hardcases model.onnx --data eval.npz --top 200 --baseline previous.onnx --out hard.npz
    """
    from ..testing.hard import hard_cases

    info = hard_cases(model, data, top=top, baseline=baseline, labels=labels_column, out=out)
    print_json(info) if as_json else console().print(
        f"wrote {info['examples']} hard examples to {out}: " + ", ".join(f"{k}: {v}" for k, v in info["by_criterion"].items()))


@test_group.command("regression")
@click.argument("candidate")
@click.option("--baseline", required=True, help="The current model.")
@click.option("--suite", type=click.Path(path_type=Path), required=True, help="A hard-case suite (.npz).")
@click.option("--tolerance", default=0, show_default=True, help="Regressions allowed (examples).")
@json_option
def regression_cmd(candidate, baseline, suite, tolerance, as_json):
    """Fail when the candidate gets wrong what the baseline got right on the suite; list them.

    \b
    Example:
      edgekit test regression candidate.ekb --baseline current.ekb --suite hard.npz
    """
    from ..testing.hard import regression

    result = regression(candidate, baseline, suite, tolerance)
    if as_json:
        print_json(result.to_dict())
    else:
        console().print(f"{result.candidate} against {result.baseline} on {result.examples} hard examples: "
                        f"{len(result.regressions)} regressions, {result.fixes} fixes; accuracy "
                        f"{result.candidate_accuracy:.1%} vs {result.baseline_accuracy:.1%}")
        if result.regressions:
            console().print(table("Regressions", ["example", "source row", "label", "predicted", "why chosen"],
                                  [[r["example"], r["source_index"], r["label"], r["predicted"], r["why"]]
                                   for r in result.regressions[:50]]))
    if not result.passed:
        raise click.exceptions.Exit(1)


@test_group.command("card")
@click.argument("candidate")
@click.option("--baseline", required=True, help="The current model.")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Evaluation data.")
@click.option("--slices", help="Comma list: class and/or columns of the data (device, ...).")
@click.option("--suite", type=click.Path(path_type=Path), help="A hard-case suite (.npz).")
@click.option("--expect", type=click.Path(path_type=Path), help="An expectation suite for the data.")
@click.option("--config", type=click.Path(path_type=Path), help="Thresholds (TOML); see the README.")
@click.option("--train", type=click.Path(path_type=Path), help="Training data, for the diagnosis.")
@click.option("--val", type=click.Path(path_type=Path), help="Validation data, for the diagnosis.")
@click.option("--recent", type=click.Path(path_type=Path), help="Labelled recent (logged) data, for the diagnosis.")
@click.option("--train-hook", metavar="MODULE:FUNCTION",
              help="Your training function hook(columns, labels) -> model: adds a learning curve over data fractions "
                   "(needs --train and --val).")
@click.option("--fractions", default="0.1,0.25,0.5,1", show_default=True,
              help="Fractions of the training data for the learning curve.")
@click.option("--no-latency", is_flag=True, help="Skip the side-by-side latency measurement.")
@click.option("--out", type=click.Path(path_type=Path), help="Folder: report.md, report.json and plots.")
@json_option
def card_cmd(candidate, baseline, data, slices, suite, expect, config, train, val, recent, train_hook, fractions,
             no_latency, out, as_json):
    """The offline report card: the candidate against the current model, overall and per slice
    (worst first), on the hard cases and the data expectations, with a verdict; exit 1 on FAIL.

    \b
    Example:
      edgekit test card candidate.ekb --baseline current.ekb --data eval.npz --slices class,device --out card/
      edgekit test card new.onnx --baseline cur.onnx --data eval.npz --train train.npz --val val.npz \\
          --train-hook mytrain.py:train --out card/
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..testing.card import report_card

    names = tuple(s.strip() for s in slices.split(",") if s.strip()) if slices else ()
    try:
        parts = tuple(float(f) for f in fractions.split(",") if f.strip())
    except ValueError:
        raise click.BadParameter(f"{fractions!r} is not a comma list of numbers, e.g. 0.1,0.25,0.5,1",
                                 param_hint="--fractions") from None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True, disable=as_json or not train_hook) as bar:
        task = bar.add_task("learning curve", total=len(parts))
        card = report_card(candidate, baseline, data, slices=names, suite=suite, expect=expect, config=config,
                           out=out, latency=not no_latency, train=train, val=val, recent=recent,
                           train_hook=train_hook, fractions=parts,
                           progress=lambda done, total, what: bar.update(task, completed=done, description=what))
    if as_json:
        print_json(card.to_dict())
    else:
        console().print(table(f"Report card: {card.candidate} against {card.baseline} - "
                              f"{'PASS' if card.passed else 'FAIL'}", ["check", "result", "detail"],
                              [[c.name, "pass" if c.passed else "FAIL", c.detail] for c in card.checks]))
        for d in card.diagnosis:
            console().print(f"diagnosis: {d['finding']}: {d['advice']}")
        if out:
            console().print(f"report: {out / 'report.md'}")
    if not card.passed:
        raise click.exceptions.Exit(1)
