"""``edgekit loop``: the retraining cycle, and ``edgekit label``: labels back into the collector."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import click

from .common import console, json_option, print_json, table
from .sync_cmd import DEFAULT_DB

CONFIG_HELP = "The loop's loop.toml (see 'edgekit loop run --help')."


def _config(path: Path):
    from ..loop.config import LoopConfig

    return LoopConfig.load(path)


def _when(t) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


@click.group("loop")
def loop() -> None:
    """Retrain a deployed model when the fleet says so: curate, label, form a data set, train,
    gate on the report card, release.

    \b
    Example:
      edgekit loop run --config loop.toml --once
      edgekit loop status --config loop.toml
      edgekit loop history --config loop.toml --json
    """


@loop.command("run")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True, help=CONFIG_HELP)
@click.option("--once", is_flag=True, help="One pass (resume or start a run, go as far as it can), then exit.")
@click.option("--now", is_flag=True, help="Retrain now (ad hoc): skip the triggers and the cool-down.")
@click.option("--interval", default="10m", show_default=True, help="As a daemon: time between passes.")
@json_option
def run_cmd(config_path, once, now, interval, as_json):
    """Run the loop: a persisted state machine in the collector database, so a crash resumes at the
    first unfinished step. Without --once it runs as a daemon (see targets/ for a systemd unit).

    \b
    loop.toml:
      model = "digits-cnn"                 # as devices log it
      db = "sqlite:///collector.db"
      current = "digits.ekb"               # the bundle the fleet runs
      train = "edgekit.zoo.digits:fit"     # fit(dataset_dir, current, out_dir) -> nn.Module or a model file
      base_data = "train.npz"              # the current model's training data
      labeler = "mypkg.labels:ask"         # optional: label the queue; otherwise 'edgekit label import'
      [curation]
      budget = 300
      strategies = { entropy = 1.0 }       # least_confidence, margin, entropy, loss, disagreement, random
      [trigger]
      alerts = ["data drift", "estimated accuracy dropped"]
      volume = 200
      schedule = "7d"
    \b
    Example:
      edgekit loop run --config loop.toml --once --now
      edgekit loop run --config loop.toml --interval 15m
    """
    from ..loop.runner import _summary, run_forever, run_once
    from ..monitor.rules import parse_duration

    config = _config(config_path)
    say = (lambda msg: None) if as_json else (lambda msg: console().print(f"[dim]{msg}[/dim]"))
    if not once:
        run_forever(config, parse_duration(interval, "--interval"), lambda msg: console().print(msg))
        return
    result = run_once(config, now_flag=now, progress=say)
    if as_json:
        print_json(result)
    else:
        console().print(_summary(result))


@loop.command("status")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True, help=CONFIG_HELP)
@json_option
def status_cmd(config_path, as_json):
    """Where the loop stands: the open run and its step, the last decision.

    \b
    Example:
      edgekit loop status --config loop.toml
    """
    from ..collector.db import Database
    from ..loop.state import decisions, last_run

    config = _config(config_path)
    db = Database(config.db_url)
    run = last_run(db, config.model)
    decision = next(iter(decisions(db, config.model, 1)), None)
    if as_json:
        print_json({"run": run.to_dict() if run else None, "decision": decision})
        return
    if run is None:
        console().print(f"{config.model}: no run yet")
    else:
        console().print(f"{config.model}: run {run.run_id} {run.status} (last step done: {run.step}) - {run.reason}")
    if decision:
        console().print(f"last decision {_when(decision['time'])}: {'retrain' if decision['retrain'] else 'wait'} "
                        f"({decision['trigger']}): {decision['reason']}")


@loop.command("history")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True, help=CONFIG_HELP)
@click.option("--limit", default=20, show_default=True)
@json_option
def history_cmd(config_path, limit, as_json):
    """Runs with their trigger, outcome and numbers, and every decision not to retrain.

    \b
    Example:
      edgekit loop history --config loop.toml --limit 5
    """
    from ..collector.db import Database
    from ..loop.state import decisions, runs

    config = _config(config_path)
    db = Database(config.db_url)
    found = runs(db, config.model, limit)
    said = decisions(db, config.model, limit)
    if as_json:
        print_json({"runs": [r.to_dict() for r in found], "decisions": said})
        return
    rows = []
    for r in found:
        gate = r.outputs.get("gate", {})
        acc = gate.get("candidate_accuracy")
        base = gate.get("current_accuracy")
        rows.append([r.run_id, _when(r.started), r.trigger, r.status, r.step,
                     f"{100 * acc:.1f}% vs {100 * base:.1f}%" if acc is not None and base is not None else "-",
                     r.reason[:80]])
    out = console()
    out.print(table(f"{config.model}: runs", ["run", "started", "trigger", "status", "last step", "test accuracy", "why"],
                    rows))
    out.print(table("decisions", ["time", "retrain", "trigger", "reason"],
                    [[_when(d["time"]), "yes" if d["retrain"] else "no", d["trigger"], d["reason"][:100]] for d in said]))


@loop.command("keep")
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True, help=CONFIG_HELP)
@click.option("--remove", help="Take this file (by its name in the list) out of the always-keep set.")
@json_option
def keep_cmd(data, config_path, remove, as_json):
    """Manage the always-keep set: representative examples (an .npz or Parquet with the model's
    inputs and labels) that every data set includes. Without DATA, list it.

    \b
    Example:
      edgekit loop keep rare-cases.npz --config loop.toml
      edgekit loop keep --config loop.toml --remove rare-cases-1a2b3c4d.npz
    """
    from ..loop.keep import add_keep, list_keep, remove_keep

    config = _config(config_path)
    if data is not None:
        added = add_keep(config.work, data)
        if not as_json:
            console().print(f"kept {added['rows']} examples as {added['file']}")
    if remove:
        remove_keep(config.work, remove)
    items = list_keep(config.work)
    if as_json:
        print_json(items)
    elif data is None:
        console().print(table("always-keep set", ["file", "rows", "classes"],
                              [[i["file"], i["rows"], i["classes"]] for i in items]))


@loop.command("rebuild")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="A new folder for the rebuilt data set.")
@click.option("--db", default=DEFAULT_DB, show_default=True, help="The collector's database the data set came from.")
@json_option
def rebuild_cmd(manifest, out, db, as_json):
    """Form a data set again from its manifest.json and check every split's hash.

    \b
    Example:
      edgekit loop rebuild loop/datasets/20261129T0146-99f1/manifest.json --out again/ --db sqlite:///collector.db
    """
    from ..collector.db import Database
    from ..loop.dataset import rebuild

    again = rebuild(manifest, out, Database(db, existing=True))
    if as_json:
        print_json(again)
    else:
        console().print(f"rebuilt {out}: " + ", ".join(f"{k} {v['rows']} rows" for k, v in again["splits"].items())
                        + " (hashes match)")


@click.group("label")
def label() -> None:
    """Labels from people back into the collector.

    \b
    Example:
      edgekit label import queue.csv --db sqlite:///collector.db
    """


@label.command("import")
@click.argument("labels", type=click.Path(path_type=Path))
@click.option("--db", default=DEFAULT_DB, show_default=True, help="The collector's database.")
@json_option
def import_cmd(labels, db, as_json):
    """Write a filled-in queue.csv (device, request_id, row, label) into the collector as
    feedback. All or nothing. Importing again adds nothing for an unchanged label; a changed one
    is added and the latest wins (a data set formed before it rebuilds as it was).

    \b
    Example:
      edgekit label import loop/runs/20261129T0146-99f1/queue/queue.csv --db sqlite:///collector.db
    """
    from ..collector.db import Database
    from ..loop.queue import import_labels

    result = import_labels(Database(db, existing=True), labels, now=time.time())
    if as_json:
        print_json(result)
    else:
        console().print(f"imported {result['imported']} labels from {labels} ({result['changed']} new or changed)")
