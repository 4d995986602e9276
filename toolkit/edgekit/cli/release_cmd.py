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
      edgekit release adopt digits.ekb --model digits-cnn   # the version devices run from a file
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


@release.command("adopt")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--model", required=True)
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False),
              help="Refuse a bundle whose signature this key does not verify.")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_STORE, show_default=True)
@_db_option
@json_option
def adopt_cmd(bundle, model, public_key, store, db, as_json):
    """Make the bundle devices already run (copied from a file, before any rollout) the fleet's
    baseline: publish it under its manifest's version, so that the first canary is compared with
    it and a rollback returns devices to it. A first rollout adopts the version the fleet logs by
    itself when that version is published.

    \b
    Example:
      edgekit release adopt digits.ekb --model digits-cnn
    """
    from ..collector.db import Database
    from ..collector.releases import adopt

    result = adopt(Database(db), store, bundle, model, public_key)
    if as_json:
        print_json(result)
    elif result["adopted"]:
        console().print(f"{model} {result['version']} is the baseline ({result['sha256'][:12]}): the next rollout "
                        "is compared with it and rolls back to it")
    else:
        console().print(f"{model}: {result['why']}")


@release.command("rollout")
@click.argument("model")
@click.argument("version")
@click.option("--canary", default="10%", show_default=True, help="Share of the model's devices (stable by device id).")
@click.option("--groups", default="", help="Only devices of these groups (comma-separated).")
@click.option("--shadow", is_flag=True, help="Canary devices run the version beside the current one; its outputs "
              "are logged, not returned.")
@click.option("--min-devices", default=0, show_default=True,
              help="Raise the share until at least this many devices are in the canary (small fleets).")
@_db_option
@json_option
def rollout_cmd(model, version, canary, groups, shadow, min_devices, db, as_json):
    """Put a published version on a canary share of the fleet (or widen its share).

    \b
    Example:
      edgekit release rollout digits-cnn 2 --canary 10% --groups store-12,store-14
      edgekit release rollout digits-cnn 2 --canary 10% --min-devices 2    # a fleet of 6
      edgekit release rollout digits-cnn 2 --canary 50%
    """
    from ..collector.db import Database
    from ..collector.releases import canary_devices, start_rollout

    database = Database(db)
    found = start_rollout(database, model, version, _percent(canary),
                          tuple(g.strip() for g in groups.split(",") if g.strip()), shadow, min_devices)
    chosen, eligible = canary_devices(database, model, found.canary, found.groups)
    if as_json:
        print_json(found.to_dict() | {"canary_devices": chosen, "eligible_devices": eligible})
    else:
        console().print(f"{model} {version}: canary on {found.canary:g}% of devices"
                        + (f" in {', '.join(found.groups)}" if found.groups else "") + (" (shadow)" if shadow else "")
                        + f": {len(chosen)} of {eligible} enrolled device(s)"
                        + (f" ({', '.join(chosen[:5])}{', ...' if len(chosen) > 5 else ''})" if chosen else "")
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
        console().print(table(None, ["signal", "canary", "baseline", "n", "p", "verdict"],
                              [[s["signal"], f"{s['canary']:.4g}", f"{s['baseline']:.4g}", "/".join(map(str, s["n"])),
                                f"{s['p']:.2g}", s["verdict"]] for s in signals]))


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
    from ..collector.canary import judge
    from ..collector.db import Database
    from ..collector.releases import canary_devices, current_rollout, devices_per_version, events

    database = Database(db, existing=True)
    rollout = current_rollout(database, model)
    verdict = judge(database, model)  # what decide would do now, with the signals side by side
    chosen, eligible = canary_devices(database, model, rollout.canary, rollout.groups) if rollout else ([], 0)
    info = {"rollout": rollout.to_dict() if rollout else None, "canary_devices": chosen, "eligible_devices": eligible,
            "devices": devices_per_version(database, model),
            "verdict": verdict.to_dict() if verdict else None, "events": events(database, model, 20)}
    if as_json:
        print_json(info)
        return
    if rollout is None:
        console().print(f"{model}: no rollout")
    else:
        console().print(f"{model} {rollout.version}: {rollout.state.replace('_', ' ')} on {rollout.canary:g}% "
                        f"(baseline {rollout.baseline or '-'})"
                        + (f": {len(chosen)} of {eligible} device(s) in the canary" if rollout.state != "promoted" else ""))
        if chosen and rollout.state != "promoted":
            console().print(f"canary devices: {', '.join(chosen[:20])}{', ...' if len(chosen) > 20 else ''}")
    console().print(table("devices", ["version", "state", "devices"],
                          [[d["version"], d["state"], d["devices"]] for d in info["devices"]]))
    if verdict is not None:
        console().print(f"now: {verdict.decision} - {verdict.reason}")
        _signals(verdict.signals)
    console().print(table("events", ["time", "version", "event", "detail"],
                          [[datetime.fromtimestamp(e["time"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), e["version"],
                            e["event"], _detail(e["detail"])] for e in info["events"]]))


def _detail(detail: dict) -> str:
    """An event's reason, else its fields (a canary's share and baseline, a device's name)."""
    if detail.get("reason"):
        return str(detail["reason"])[:80]
    return ", ".join(f"{k} {v}" for k, v in detail.items() if v not in (None, "", [], False))[:80]
