"""``edgekit release``: publish bundles to the collector and roll them out to the fleet."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click

from .common import console, json_option, print_json, table
from .sync_cmd import DEFAULT_DB, DEFAULT_STORE


def _db_option(func):
    return click.option("--db", default=DEFAULT_DB, show_default=True,
                        help="The collector's database: sqlite:///path.db or postgresql://user@host/db.")(func)


def _percent(text: str) -> float:
    try:
        return float(str(text).rstrip("%"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a share; give e.g. 10%") from None


@click.group("release")
def release() -> None:
    """Fleet updates: a registry of signed bundles, canary rollouts judged on the monitored
    signals, promotion and rollback.

    \b
    Example:
      edgekit release publish digits-2.ekb --model digits-cnn --version 2 --public-key release.pub
      edgekit release rollout digits-cnn 2 --canary 10%
      edgekit release decide digits-cnn          # promote, roll back or wait, with the numbers
      edgekit release status digits-cnn
    """


@release.command("publish")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--model", required=True)
@click.option("--version", "version", required=True)
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False),
              help="Refuse a bundle whose signature this key does not verify.")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_STORE, show_default=True)
@_db_option
@json_option
def publish_cmd(bundle, model, version, public_key, store, db, as_json):
    """Store a bundle in the collector's registry (content-addressed by sha256).

    \b
    Example:
      edgekit release publish loop/releases/digits-cnn-2.ekb --model digits-cnn --version 2 --public-key k.pub
    """
    from ..collector.db import Database
    from ..collector.releases import publish

    result = publish(Database(db), store, bundle, model, version, public_key)
    if as_json:
        print_json(result)
    else:
        console().print(f"published {model} {version} ({result['sha256'][:12]}, {result['size']:,} bytes)")


@release.command("rollout")
@click.argument("model")
@click.argument("version")
@click.option("--canary", default="10%", show_default=True, help="Share of the model's devices (stable by device id).")
@click.option("--groups", default="", help="Only devices of these groups (comma-separated).")
@click.option("--shadow", is_flag=True, help="Canary devices run the version beside the current one; its outputs "
              "are logged, not returned.")
@_db_option
@json_option
def rollout_cmd(model, version, canary, groups, shadow, db, as_json):
    """Put a published version on a canary share of the fleet (or widen its share).

    \b
    Example:
      edgekit release rollout digits-cnn 2 --canary 10% --groups store-12,store-14
      edgekit release rollout digits-cnn 2 --canary 50%
    """
    from ..collector.db import Database
    from ..collector.releases import start_rollout

    found = start_rollout(Database(db), model, version, _percent(canary),
                          tuple(g.strip() for g in groups.split(",") if g.strip()), shadow)
    if as_json:
        print_json(found.to_dict())
    else:
        console().print(f"{model} {version}: canary on {found.canary:g}% of devices"
                        + (f" in {', '.join(found.groups)}" if found.groups else "") + (" (shadow)" if shadow else "")
                        + f"; baseline {found.baseline or '-'}")


def _state_command(name: str, state: str, doc: str):
    @release.command(name, help=doc)
    @click.argument("model")
    @click.option("--reason", default="by hand", show_default=True)
    @_db_option
    @json_option
    def command(model, reason, db, as_json):
        from ..collector.db import Database
        from ..collector.releases import set_state

        found = set_state(Database(db), model, state, reason)
        if as_json:
            print_json(found.to_dict())
        else:
            console().print(f"{model} {found.version}: {found.state.replace('_', ' ')}")
    return command


_state_command("promote", "promoted", "Give the canary version to every device.\n\n\b\nExample:\n  edgekit release promote digits-cnn")
_state_command("pause", "paused", "Freeze the rollout: no device changes version.\n\n\b\nExample:\n  edgekit release pause digits-cnn --reason 'holiday freeze'")
_state_command("rollback", "rolled_back", "Return every device to the baseline version.\n\n\b\nExample:\n  edgekit release rollback digits-cnn --reason 'customer report'")


@release.command("decide")
@click.argument("model")
@click.option("--min-predictions", default=200, show_default=True, help="On each side before promotion.")
@click.option("--dry-run", is_flag=True, help="Judge, but neither promote nor roll back.")
@_db_option
@json_option
def decide_cmd(model, min_predictions, dry_run, db, as_json):
    """Judge the canary against the baseline (fallbacks, feedback accuracy, latency; a version
    that failed on a device rolls back at once) and act on it. Run it from cron or a timer.

    \b
    Example:
      edgekit release decide digits-cnn --min-predictions 500
    """
    from ..collector.canary import Policy, decide, judge
    from ..collector.db import Database

    database = Database(db, existing=True)
    policy = Policy(min_predictions=min_predictions)
    verdict = judge(database, model, policy) if dry_run else decide(database, model, policy)
    if as_json:
        print_json(verdict.to_dict() if verdict else None)
        return
    if verdict is None:
        console().print(f"{model}: no canary to judge")
        return
    console().print(f"{model}: {verdict.decision} - {verdict.reason}")
    _signals(verdict.signals)


def _signals(signals: list) -> None:
    if signals:
        table(None, ["signal", "canary", "baseline", "n", "p", "verdict"],
              [[s["signal"], f"{s['canary']:.4g}", f"{s['baseline']:.4g}", "/".join(map(str, s["n"])),
                f"{s['p']:.2g}", s["verdict"]] for s in signals])


@release.command("status")
@click.argument("model")
@_db_option
@json_option
def status_cmd(model, db, as_json):
    """The rollout, how many devices run each version, the canary's signals beside the
    baseline's with what decide would do now, and the events.

    \b
    Example:
      edgekit release status digits-cnn --json
    """
    from ..collector.db import Database
    from ..collector.releases import current_rollout, events

    database = Database(db, existing=True)
    rollout = current_rollout(database, model)
    with database.read() as tx:
        running = tx.all("SELECT version, state, COUNT(*) FROM device_models WHERE model = ? GROUP BY version, state",
                         (model,))
    from ..collector.canary import judge

    verdict = judge(database, model)  # what decide would do now, with the signals side by side
    info = {"rollout": rollout.to_dict() if rollout else None,
            "devices": [{"version": v, "state": s, "devices": n} for v, s, n in running],
            "verdict": verdict.to_dict() if verdict else None, "events": events(database, model, 20)}
    if as_json:
        print_json(info)
        return
    if rollout is None:
        console().print(f"{model}: no rollout")
    else:
        console().print(f"{model} {rollout.version}: {rollout.state.replace('_', ' ')} on {rollout.canary:g}% "
                        f"(baseline {rollout.baseline or '-'})")
    table("devices", ["version", "state", "devices"], [[d["version"], d["state"], d["devices"]] for d in info["devices"]])
    if verdict is not None:
        console().print(f"now: {verdict.decision} - {verdict.reason}")
        _signals(verdict.signals)
    table("events", ["time", "version", "event", "detail"],
          [[datetime.fromtimestamp(e["time"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), e["version"], e["event"],
            str(e["detail"].get("reason", ""))[:80]] for e in info["events"]])
