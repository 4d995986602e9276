"""``edgekit collector`` (the central service) and ``edgekit sync`` (the device daemon)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import click

from .common import console, json_option, print_json, steps, table

DEFAULT_DB = "sqlite:///edgekit-collector.db"
DEFAULT_STORE = Path("edgekit-bundles")


def _db_option(func):
    return click.option("--db", default=DEFAULT_DB, show_default=True,
                        help="sqlite:///path.db, or postgresql://user@host/db for fleets.")(func)


@click.group("collector")
def collector() -> None:
    """The central collector of device logs, for retraining.

    \b
    Example:
      edgekit collector add-device pi-kitchen --db sqlite:///logs.db
      edgekit collector serve --db sqlite:///logs.db --port 8080
      edgekit collector export --since 2026-11-01 --model digits-cnn --out data.npz --db sqlite:///logs.db
    """


@collector.command("serve")
@_db_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option("--max-batch-mb", default=16, show_default=True, help="Largest accepted (compressed) batch.")
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False), help="Serve https with this certificate (PEM).")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), help="The certificate's private key (PEM).")
@click.option("--metrics-window", default="1h", show_default=True,
              help="The window the /metrics gauges (monitoring signals) are computed over.")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_STORE, show_default=True,
              help="Where published bundles are kept (edgekit release publish --store).")
@click.option("--decide-every", default="1m", show_default=True,
              help="Judge canary rollouts this often (promote, roll back); 0 turns it off (run edgekit release decide).")
@click.option("--rollup-every", default="1m", show_default=True,
              help="Roll the hours that ended up for monitoring this often (one replica does it); 0 turns it off "
                   "(run edgekit collector rollup).")
def serve_cmd(db, host, port, max_batch_mb, ssl_certfile, ssl_keyfile, metrics_window, store, decide_every,
              rollup_every):
    """Serve POST /v1/logs, GET /v1/health, GET /metrics (Prometheus) and the fleet-update routes
    (assignment, bundle downloads, device state) on Starlette and uvicorn.

    \b
    Example:
      edgekit collector serve --db postgresql://edgekit@db/edgekit --host 0.0.0.0 --port 8080
      edgekit collector serve --ssl-certfile collector.pem --ssl-keyfile collector.key --port 8443
    """
    from ..collector.app import serve

    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise click.UsageError("give --ssl-certfile and --ssl-keyfile together")
    from ..collector.db import Database

    Database(db)  # a bad --db is one clear error here, before the server starts
    scheme = "https" if ssl_certfile else "http"
    console().print(f"edgekit collector on {scheme}://{host}:{port} ({db})")
    from ..monitor.rules import parse_duration

    window = parse_duration(metrics_window, "--metrics-window")
    every = 0.0 if decide_every.strip() == "0" else parse_duration(decide_every, "--decide-every")
    rollup = 0.0 if rollup_every.strip() == "0" else parse_duration(rollup_every, "--rollup-every")
    serve(db, host, port, max_body=max_batch_mb * 1024 * 1024, certfile=ssl_certfile, keyfile=ssl_keyfile,
          metrics_window_s=window, store=store, decide_every_s=every, rollup_every_s=rollup)


@collector.command("add-device")
@click.argument("name")
@click.option("--group", default="", help="The device group monitoring reports on (a site, a hardware batch, ...).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the token to this new file, readable by its owner only (mode 0600), instead of printing "
                   "it. An existing file is refused before the device is registered.")
@_db_option
def add_device_cmd(name, group, token_file, db):
    """Register a device and print its token, once (only a hash is stored).

    \b
    Example:
      edgekit collector add-device pi-kitchen --group store-12 --token-file pi-kitchen.token
      edgekit collector add-device pi-hall > pi-hall.token   # printed: mind the file's mode
    """
    import os

    from ..collector.db import Database, add_device
    from ..errors import EdgekitError

    if token_file is not None:
        # checked before the device exists: a token that cannot be written would be lost
        if token_file.exists():
            raise EdgekitError(f"--token-file {token_file} already exists",
                               "give a new path: edgekit does not overwrite a file it did not write")
        if not token_file.parent.is_dir():
            raise EdgekitError(f"--token-file {token_file}: there is no folder {token_file.parent}",
                               "make the folder first, or give another path")
    token = add_device(Database(db), name, group=group)
    if token_file is None:
        click.echo(token)
        return
    try:
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise EdgekitError(f"device {name!r} is registered, but its token could not be written to {token_file}: "
                           f"{exc.strerror}", f"edgekit collector revoke-device {name}, then add it again") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    console().print(f"device {name!r} registered; its token is in {token_file} (mode 0600): give it to the device")


@collector.command("set-group")
@click.argument("name")
@click.argument("group")
@_db_option
def set_group_cmd(name, group, db):
    """Move a device to another group (monitoring regroups its history too).

    \b
    Example:
      edgekit collector set-group pi-kitchen store-14 --db sqlite:///logs.db
    """
    from ..collector.db import Database, set_group

    set_group(Database(db), name, group)
    console().print(f"{name} is in group {group!r}")


@collector.command("revoke-device")
@click.argument("name")
@_db_option
def revoke_device_cmd(name, db):
    """Revoke a device's token: its uploads get 401 from now on.

    \b
    Example:
      edgekit collector revoke-device pi-kitchen
    """
    from ..collector.db import Database, revoke_device

    revoke_device(Database(db), name)
    console().print(f"revoked {name}")


@collector.command("export")
@_db_option
@click.option("--since", help="ISO time or Unix timestamp.")
@click.option("--model", help="Only this model's predictions.")
@click.option("--version", "model_version", help="Only this model version's predictions.")
@click.option("--format", "fmt", type=click.Choice(["npz", "parquet"]), default="npz", show_default=True,
              help="An .npz file, or a folder of Parquet files partitioned by model and date (streamed).")
@click.option("--labelled-only", is_flag=True, help="Only predictions with a feedback label (a training set).")
@click.option("--incremental", is_flag=True,
              help="With --format parquet: make the folder a lake and, on later runs, add only the records "
                   "received since the last one (new part files; up to a minute ago).")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True)
@json_option
def export_cmd(db, since, model, model_version, fmt, labelled_only, incremental, out, as_json):
    """Export logged predictions with their feedback, for retraining and analysis. The inputs
    keep their names and the labels are 'labels', so the export is --data for every command.

    \b
    Example:
      edgekit collector export --since 2026-11-01 --model minilm --out minilm-logs.npz
      edgekit collector export --model digits-cnn --format parquet --out logs/   # pandas, DuckDB, Spark
      edgekit collector export --model digits-cnn --labelled-only --out labelled.npz
      edgekit collector export --model digits-cnn --format parquet --incremental --out lake/   # hourly, from cron
    """
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ..collector.db import Database
    from ..collector.export import export

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True, disable=as_json) as bar:
        task = bar.add_task("exporting", total=None)
        info = export(Database(db, existing=True), out, since=since, model=model, version=model_version, fmt=fmt,
                      labelled_only=labelled_only, incremental=incremental,
                      progress=lambda rows: bar.update(task, description=f"exported {rows:,} rows"))
    if as_json:
        print_json(info)
        return
    if incremental and not info["records"]:
        console().print(f"nothing new for {out} (records received up to a minute ago are in it)")
        return
    console().print(f"wrote {info['rows']} rows from {info['records']} predictions ({info['labelled']} rows labelled) "
                    f"to {out}" + (f" (run {info['run']} of the lake)" if incremental else ""))
    if info["skipped"]:
        console().print(f"[yellow]skipped {info['skipped']} unreadable stored rows:[/yellow] {info['skipped_reasons']}")
    if info["labels_unplaced"]:
        console().print(f"[yellow]{info['labels_unplaced']} batch predictions had one label for several rows; "
                        "left unlabelled[/yellow]")


@collector.command("lake")
@_db_option
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="The lake's folder: made on the first run, added to on each later one.")
@json_option
def lake_cmd(db, out, as_json):
    """Keep a telemetry lake: every record's signals, inputs and outputs, all feedback, the hourly
    sketches, devices and references as Parquet. Each run adds what the collector received since
    the last one (up to a minute ago), so feedback that comes days late is in it too. Monitoring
    and curation read it with DuckDB or Spark: edgekit monitor report --lake DIR.

    \b
    Example:
      edgekit collector lake --db postgresql://edgekit@db/edgekit --out /data/lake   # hourly, from cron
      edgekit monitor report --model digits-cnn --lake /data/lake --engine spark --out report/
    """
    from ..collector.db import Database
    from ..lake.write import update

    say, stop = steps()
    try:
        info = update(Database(db, existing=True), out, progress=lambda table, rows: say(f"{table}: {rows:,} rows"))
    finally:
        stop()
    if as_json:
        print_json(info)
        return
    console().print(f"run {info['run']} of {out}: {info['records']:,} records, {info['feedback']:,} feedback rows and "
                    f"{info['sketch_rows']:,} sketch changes, received up to "
                    f"{datetime.fromtimestamp(info['received_until'], timezone.utc):%Y-%m-%d %H:%M:%S} UTC")


@collector.command("prune")
@_db_option
@click.option("--older-than", required=True, help="Keep this much history, e.g. 90d or 2160h.")
@json_option
def prune_cmd(db, older_than, as_json):
    """Retention: drop the records (and their feedback) older than --older-than. On a PostgreSQL
    database made partitioned by day, whole days are dropped as tables; elsewhere rows are deleted
    in chunks. The hourly sketches (drift and quantiles) are kept.

    \b
    Example:
      edgekit collector prune --db postgresql://edgekit@db/edgekit --older-than 90d   # daily, from cron
    """
    from ..collector.db import Database
    from ..collector.partitions import prune
    from ..monitor.rules import parse_duration

    info = prune(Database(db, existing=True), parse_duration(older_than, "--older-than"))
    if as_json:
        print_json(info)
        return
    what = (f"{len(info['partitions_dropped'])} day partitions ({info['records_deleted']:,} records)"
            if info["partitioned"] else f"{info['records_deleted']:,} records")
    console().print(f"dropped {what} and {info['feedback_deleted']:,} feedback rows from before "
                    f"{datetime.fromtimestamp(info['cut'], timezone.utc):%Y-%m-%d %H:%M} UTC")


@collector.command("rollup")
@_db_option
@click.option("--settle", default="2m", show_default=True,
              help="Roll up an hour once it ended this long ago (devices may still be sending it).")
@json_option
def rollup_cmd(db, settle, as_json):
    """Roll up the hours that ended: per model, version, device and hour, the sums monitoring reads
    (records, low confidence, entropy, fallbacks, distinct outputs, lag, ...), so a week's report
    reads rollups, not every record. `collector serve` does this every minute; run it after a bulk
    import, or from cron where the collector runs with --rollup-every 0. Reports are exact either
    way: hours not rolled up yet are read from the records.

    \b
    Example:
      edgekit collector rollup --db postgresql://edgekit@db/edgekit
    """
    from ..collector.db import Database
    from ..monitor.rollups import roll
    from ..monitor.rules import parse_duration

    database = Database(db, existing=True)
    say, stop = steps()
    try:
        info = roll(database, settle_s=parse_duration(settle, "--settle"),
                    progress=lambda done, total: say(f"rolled up {done:,} of {total:,} device hours"))
    finally:
        stop()
    if as_json:
        print_json(info)
        return
    healed = f"; {info['healed']:,} counted at an old reference's threshold were recounted" if info["healed"] else ""
    console().print(f"rolled up {info['marks']:,} device hour{'s' if info['marks'] != 1 else ''} "
                    f"({info['hours']:,} model hour{'s' if info['hours'] != 1 else ''}) in "
                    f"{info['seconds']:.1f} s{healed}")


@collector.command("partition")
@_db_option
@json_option
def partition_cmd(db, as_json):
    """Partition an older PostgreSQL collector database's records by day, copying no row: the
    table becomes the partition of everything before tomorrow (UTC), and each day from then on
    gets its own, which prune drops whole. Ingest waits while it runs (PostgreSQL indexes the
    new key and checks the old table's range); new databases are partitioned from the start.

    \b
    Example:
      edgekit collector partition --db postgresql://edgekit@db/edgekit
    """
    from ..collector.db import Database
    from ..collector.partitions import convert

    info = convert(Database(db, existing=True))
    if as_json:
        print_json(info)
        return
    if not info["converted"]:
        console().print("records are already partitioned by day")
        return
    console().print(f"partitioned: {info['records']:,} records kept in one partition up to "
                    f"{datetime.fromtimestamp(info['legacy_until'], timezone.utc):%Y-%m-%d} UTC, a partition per day "
                    f"after that ({info['seconds']:.1f} s)")


@collector.command("stats")
@_db_option
@json_option
def stats_cmd(db, as_json):
    """Records per device and model, feedback rate, last seen.

    \b
    Example:
      edgekit collector stats --db sqlite:///logs.db
    """
    from ..collector.db import Database
    from ..collector.export import stats

    data = stats(Database(db, existing=True))
    if as_json:
        print_json(data)
        return

    def when(t):
        try:
            return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if t else "-"
        except (OverflowError, OSError, ValueError):
            return "invalid"

    console().print(table("Devices", ["device", "revoked", "records", "feedback rate", "last seen (UTC)"],
                          [[d["device"], d["revoked"], d["records"], f"{d['feedback_rate']:.1%}", when(d["last_seen"])]
                           for d in data["devices"]]))
    console().print(table("Records", ["device", "model", "records", "last record (UTC)"],
                          [[r["device"], r["model"], r["records"], when(r["last_record"])] for r in data["by_device_model"]]))
    if data["invalid_rows"]:
        console().print(f"[yellow]{data['invalid_rows']} stored records have a time that is not a finite number[/yellow]")
    waiting = data["rollup_backlog"]
    if waiting["device_hours"]:
        n = waiting["device_hours"]
        console().print(f"hourly rollups: {n:,} device hour{'s wait' if n != 1 else ' waits'} to be rolled up, the oldest "
                        f"from {when(waiting['oldest_hour'])} UTC (collector serve rolls the hours that ended every "
                        "minute; else run edgekit collector rollup)")


@click.group("sync")
def sync() -> None:
    """Ship the device's prediction log to the collector.

    \b
    Example:
      edgekit sync run --config /etc/edgekit/sync.toml
      edgekit sync status --config /etc/edgekit/sync.toml
    """


@sync.command("run")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option("--once", is_flag=True, help="Drain the backlog and exit instead of running as a daemon.")
@click.option("--timeout", "timeout_s", default=120.0, show_default=True,
              help="With --once: give up (exit 1) after this many seconds of failures.")
def sync_run_cmd(config_path, once, timeout_s):
    """Run the sync client (a daemon unless --once).

    \b
    Example:
      edgekit sync run --config sync.toml --once --timeout 60
    """
    from ..sync.client import SyncConfig, client_from_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    client = client_from_config(SyncConfig.from_file(config_path))
    if once:
        shipped = client.drain(deadline_s=timeout_s)
        stats = client.store.stats()
        console().print(f"shipped {shipped} rows ({client.dead_lettered} set aside in the dead-letter table); "
                        f"pending {stats['pending']}, dead letters {stats['dead_letter']}, dropped {stats['dropped']}")
        return
    try:
        client.run()
    except KeyboardInterrupt:
        pass


@sync.command("status")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@json_option
def sync_status_cmd(config_path, as_json):
    """Pending, shipped and dropped records in the device store.

    \b
    Example:
      edgekit sync status --config sync.toml --json
    """
    from ..sync.client import SyncConfig
    from ..sync.store import LogStore

    config = SyncConfig.from_file(config_path)
    store = LogStore(config.db, max_bytes=config.max_bytes, when_full=config.when_full)
    stats = store.stats()
    store.close()
    print_json(stats) if as_json else console().print(table("Log store", ["", ""], [[k, v] for k, v in stats.items()]))
