"""``edgekit monitor``: the six signals over the collector's database, alerts, reports, dashboards."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..lake.read import ENGINES
from .common import console, json_option, print_json, table
from .sync_cmd import DEFAULT_DB


def _db_option(func):
    return click.option("--db", default=DEFAULT_DB, show_default=True,
                        help="The collector's database: sqlite:///path.db or postgresql://user@host/db.")(func)


def _source_options(func):
    """--db, or --lake with its engine: the same signals from the collector or from its lake."""
    func = click.option("--end", help="The window's end, ISO 8601 or a Unix time (default: now, or where the lake "
                                      "ends): yesterday's report again, or the database's beside the lake's.")(func)
    func = click.option("--spark-master", default="local[*]", show_default=True,
                        help="With --engine spark: the cluster to run on.")(func)
    func = click.option("--engine", type=click.Choice(list(ENGINES)), default="duckdb", show_default=True,
                        help="With --lake: DuckDB on this machine, or Spark.")(func)
    func = click.option("--lake", type=click.Path(path_type=Path),
                        help="Read a telemetry lake (edgekit collector lake) instead of the database; the window "
                             "ends where the lake does.")(func)
    return _db_option(func)


def _window(text: str) -> float:
    from ..monitor.rules import parse_duration

    return parse_duration(text, "--window")


@click.group("monitor")
def monitor() -> None:
    """Watch deployed models: feedback, performance, proxies, data quality, drift, system.

    \b
    Example:
      edgekit monitor reference --data ref.npz --model digits-cnn --predictor digits.ekb --db sqlite:///logs.db
      edgekit monitor report --model digits-cnn --window 1d --out report/ --db sqlite:///logs.db
      edgekit monitor check --model digits-cnn --rules rules.toml --webhook https://hooks.example/alerts
    """


@monitor.command("reference")
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="Reference data: .npz, Parquet, or an export of logged traffic (with outputs).")
@click.option("--model", required=True, help="The model's name, as devices log it.")
@click.option("--predictor", help="A bundle or model file to compute outputs (not needed for an export).")
@_db_option
@json_option
def reference_cmd(data, model, predictor, db, as_json):
    """Store what good traffic looks like: feature histograms, an expectation suite, data bounds,
    the confidence calibration (accuracy without labels) and the reference accuracy.

    \b
    Example:
      edgekit monitor reference --data heldout.npz --model digits-cnn --predictor digits.ekb
      edgekit monitor reference --data last-week.npz --model minilm   # an export carries its outputs
    """
    from ..collector.db import Database
    from ..monitor.reference import build_reference, save_reference

    database = Database(db, existing=True)
    ref = build_reference(data, model, predictor)
    save_reference(database, ref)
    info = {"model": model, "rows": ref.rows, "task": ref.task, "accuracy": ref.accuracy,
            "low_confidence": ref.low_confidence, "features": len(ref.histograms),
            "expectations": len(ref.suite.get("expect", [])) if ref.suite else 0}
    if as_json:
        print_json(info)
        return
    acc = f", accuracy {ref.accuracy:.1%}" if ref.accuracy is not None else ""
    console().print(f"stored the reference of {model}: {ref.rows:,} rows, {ref.task}{acc}, "
                    f"{info['features']} features, {info['expectations']} expectations")


def _source(db, lake, engine, master, end):
    """The database, or the lake through its engine (its window ends where the lake does), and
    the window's end."""
    from ..collector.export import parse_time

    if lake is None:
        from ..collector.db import Database

        return Database(db, existing=True), parse_time(end) if end else time.time()
    from ..lake.read import LakeDatabase

    source = LakeDatabase(lake, engine, master)
    return source, parse_time(end) if end else source.received_until


def _snapshot(database, now, model, window, by):
    from ..monitor.signals import snapshot

    dims = tuple(d.strip() for d in by.split(",") if d.strip()) if by else ()
    return snapshot(database, model, now - _window(window), now, by=dims, now=now)


@monitor.command("show")
@click.option("--model", required=True)
@click.option("--window", default="1d", show_default=True, help="How far back: 15m, 6h, 1d, 2w.")
@click.option("--by", default="version,group", show_default=True, help="Scopes: version, group and/or device.")
@_source_options
@json_option
def show_cmd(model, window, by, db, lake, engine, spark_master, end, as_json):
    """The signals per scope, as a table (or --json).

    \b
    Example:
      edgekit monitor show --model digits-cnn --window 6h --by group
      edgekit monitor show --model digits-cnn --window 7d --lake /data/lake   # DuckDB over the lake
    """
    database, now = _source(db, lake, engine, spark_master, end)
    try:
        snap = _snapshot(database, now, model, window, by)
    finally:
        database.close()
    if as_json:
        print_json(snap.to_dict())
        return
    from ..monitor.report import COLUMNS, format_value

    rows = [[s.name] + [format_value(s.signals.get(signal), pattern) for _, signal, pattern, _ in COLUMNS]
            for s in list(snap.scopes) + [snap.total]]
    console().print(table(f"{model} over {window}", ["scope"] + [c[0] for c in COLUMNS], rows))


@monitor.command("report")
@click.option("--model", required=True)
@click.option("--window", default="1d", show_default=True, help="How far back: 15m, 6h, 1d, 2w.")
@click.option("--by", default="version,group", show_default=True, help="Scopes: version, group and/or device.")
@click.option("--rules", type=click.Path(path_type=Path), help="Alert rules (TOML); the defaults otherwise.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for report.html and report.json.")
@_source_options
@json_option
def report_cmd(model, window, by, rules, out, db, lake, engine, spark_master, end, as_json):
    """A self-contained HTML report (and report.json): alerts on top, health per version and
    device group, each signal over time, drift per feature, data quality, feedback, system.

    \b
    Example:
      edgekit monitor report --model digits-cnn --window 1d --out report/
      edgekit monitor report --model digits-cnn --window 30d --lake /data/lake --engine spark --out report/
    """
    from ..monitor.report import write_report
    from ..monitor.rules import evaluate, load_rules

    database, now = _source(db, lake, engine, spark_master, end)
    try:
        snap = _snapshot(database, now, model, window, by)
        alerts = evaluate(database, model, load_rules(rules), now=snap.end)
    finally:
        database.close()
    path = write_report(snap, alerts, out, window, command=f"edgekit monitor report --model {model} --window {window}")
    if as_json:
        print_json({"report": str(path), "alerts": [a.to_dict() for a in alerts], "records": snap.total.signals["records"]})
        return
    console().print(f"{len(alerts)} alerts; report: {path}")


@monitor.command("check")
@click.option("--model", required=True)
@click.option("--rules", type=click.Path(path_type=Path), help="Alert rules (TOML); the built-in defaults otherwise.")
@click.option("--webhook", help="POST the alerts to notify as JSON to this URL.")
@_db_option
@json_option
def check_cmd(model, rules, webhook, db, as_json):
    """Evaluate alert rules; one line per firing alert and exit 1 when any fires.

    \b
    A rules file holds [[rule]] tables: name, signal (e.g. drift.share, feedback.accuracy_drop_certain,
    proxy.fallback_share), above or below, min_samples, by (version, group, device or model),
    window, cooldown (a firing alert is notified again only after it), severity.

    \b
    Example:
      edgekit monitor check --model digits-cnn --rules rules.toml --webhook https://hooks.example/edgekit
    """
    from ..collector.db import Database
    from ..monitor.rules import check_webhook, evaluate, load_rules, notified, post_webhook

    if webhook:
        check_webhook(webhook)
    database = Database(db, existing=True)
    alerts = evaluate(database, model, load_rules(rules))
    if as_json:
        print_json({"alerts": [a.to_dict() for a in alerts]})
    else:
        for alert in alerts:
            click.echo(alert.line())
        if not alerts:
            console().print(f"{model}: no alerts")
    if webhook and any(a.notify for a in alerts):
        post_webhook(webhook, alerts)  # raises when undelivered: no cool-down starts
    notified(database, alerts)
    if alerts:
        raise click.exceptions.Exit(1)


@monitor.command("grafana")
def grafana_cmd():
    """Print a Grafana dashboard (JSON) over the collector's /metrics gauges (built from the
    signal catalog: a panel per signal that has one).

    \b
    Example:
      edgekit monitor grafana > edgekit-dashboard.json   # then import it in Grafana
    """
    import json

    from ..monitor.catalog import dashboard

    click.echo(json.dumps(dashboard(), indent=2))
