"""The model registry and rollouts: which bundle each device should run.

Bundles are stored content-addressed (``<store>/<sha256>.ekb``) and described in ``releases``.
A rollout puts one version on a canary share of a model's devices, chosen by a stable hash of
the device id (the same devices stay in the canary as the share grows), optionally within some
device groups and optionally in shadow (the canary runs it beside the current version; outputs
are logged, not returned). ``promote`` gives it to every device, ``rollback`` returns every device
to the baseline, ``pause`` freezes the assignment. Every change is an event with its reason.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from .._io import sha256_file, to_json
from ..errors import EdgekitError
from ..sync.fleet import DEVICE_STATES, Assignment, Release, WireError, check_version
from .db import Database

STATES = ("canary", "promoted", "paused", "rolled_back")


@dataclass(frozen=True)
class Rollout:
    model: str
    version: str
    baseline: Optional[str]
    canary: float  # percent of the model's (eligible) devices
    groups: tuple[str, ...]
    shadow: bool
    state: str
    started: float
    updated: float

    def to_dict(self) -> dict:
        return asdict(self)


def bucket(device: str, model: str) -> float:
    """A device's stable place in [0, 100): the canary is every device below the share."""
    digest = hashlib.sha256(f"{model}\0{device}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10000 / 100.0


def publish(db: Database, store: Path, bundle: Path, model: str, version: str,
            public_key: Optional[str] = None) -> dict:
    """Store ``bundle`` as ``model`` ``version``: it must open (and verify against ``public_key``
    when given). Publishing the same bytes again is a no-op; other bytes under a published
    version are refused (a version names one artefact forever)."""
    from ..bundle import read_manifest

    try:
        check_version(version)
    except WireError as exc:
        raise EdgekitError(str(exc), "give --version a name like 3 or 1.2.0") from None
    bundle = Path(bundle)
    if not bundle.is_file():
        raise EdgekitError(f"bundle {bundle} does not exist", "give the .ekb that edgekit optimize --package wrote")
    manifest = read_manifest(bundle, public_key)
    if manifest.model.name != model:
        raise EdgekitError(f"{bundle} holds model {manifest.model.name!r}, not {model!r}",
                           f"publish it as --model {manifest.model.name}")
    sha = sha256_file(bundle)
    size = bundle.stat().st_size
    with db.connect() as tx:
        row = tx.one("SELECT sha256 FROM releases WHERE model = ? AND version = ?", (model, version))
        if row is not None and row[0] != sha:
            raise EdgekitError(f"{model} {version} is already published with other content ({row[0][:12]})",
                               "publish the new bundle under a new version")
        store.mkdir(parents=True, exist_ok=True)
        target = store / f"{sha}.ekb"
        if not target.exists():
            tmp = target.with_suffix(".part")
            shutil.copyfile(bundle, tmp)
            tmp.replace(target)
        if row is None:
            tx.execute("INSERT INTO releases (model, version, sha256, size, created, signed) VALUES (?,?,?,?,?,?)",
                       (model, version, sha, size, time.time(), int(public_key is not None)))
    return {"model": model, "version": version, "sha256": sha, "size": size, "file": str(target)}


def _release(model: str, version: str, row) -> Release:
    return Release(model, version, row[0], int(row[1]), float(row[2]))


def release(db: Database, model: str, version: str) -> Release:
    with db.read() as tx:
        row = tx.one("SELECT sha256, size, created FROM releases WHERE model = ? AND version = ?", (model, version))
    if row is None:
        raise EdgekitError(f"{model} {version} is not published", f"edgekit release publish BUNDLE --model {model} "
                           f"--version {version}")
    return _release(model, version, row)


_ROLLOUT = "r.model, r.version, r.baseline, r.canary, r.groups, r.shadow, r.state, r.started, r.updated"


def _rollout(row) -> Rollout:
    return Rollout(row[0], row[1], row[2], float(row[3]), tuple(json.loads(row[4])), bool(row[5]), row[6],
                   row[7], row[8])


def current_rollout(db: Database, model: str) -> Optional[Rollout]:
    with db.read() as tx:
        row = tx.one(f"SELECT {_ROLLOUT} FROM rollouts r WHERE r.model = ?", (model,))
    return _rollout(row) if row is not None else None


def _event(tx, model: str, version: str, event: str, detail: dict) -> None:
    tx.execute("INSERT INTO rollout_events (model, time, version, event, detail) VALUES (?,?,?,?,?)",
               (model, time.time(), version, event, to_json(detail)))


FIELD_WINDOW_S = 86400.0  # what devices logged in the fleet's last day is what the field runs


def field_version(db: Database, model: str, other_than: str = "") -> Optional[tuple[str, int]]:
    """(version, devices): the version most devices logged predictions with in the last day of the
    model's log, other than ``other_than``; None where nothing was logged."""
    with db.read() as tx:
        row = tx.one("SELECT version, COUNT(DISTINCT device) AS n FROM records WHERE model = ? AND version <> ? "
                     "AND time >= (SELECT MAX(time) FROM records WHERE model = ?) - ? GROUP BY version "
                     "ORDER BY n DESC, version LIMIT 1", (model, other_than, model, FIELD_WINDOW_S))
    return (row[0], int(row[1])) if row is not None else None


def adopt(db: Database, store: Path, bundle: Path, model: str, public_key: Optional[str] = None) -> dict:
    """Publish the bundle devices already run (from a file, before any rollout) under its
    manifest's version and make it the fleet's baseline: the first canary is compared with it and
    a rollback returns devices to it. Also mends a first canary that started without a baseline."""
    from ..bundle import read_manifest

    if not Path(bundle).is_file():
        raise EdgekitError(f"bundle {bundle} does not exist", "give the .ekb the devices run")
    version = read_manifest(Path(bundle), public_key).model.version
    published = publish(db, store, bundle, model, version, public_key)
    previous, now = current_rollout(db, model), time.time()
    with db.connect() as tx:
        if previous is None:
            tx.execute("INSERT INTO rollouts (model, version, baseline, canary, groups, shadow, state, started, updated) "
                       "VALUES (?,?,NULL,100,'[]',0,'promoted',?,?)", (model, version, now, now))
        elif previous.state in ("canary", "paused") and previous.baseline is None and previous.version != version:
            tx.execute("UPDATE rollouts SET baseline = ?, updated = ? WHERE model = ?", (version, now, model))
        elif (previous.version == version and previous.state == "promoted") or previous.baseline == version:
            return published | {"adopted": False, "why": f"{version} is already the fleet's baseline"}
        else:
            raise EdgekitError(f"{model} has a baseline already ({previous.baseline or previous.version}); adopt "
                               "names the version devices run before the first rollout",
                               f"roll the version out instead: edgekit release rollout {model} {version}")
        _event(tx, model, version, "adopted", {"reason": "the version devices run, adopted as the baseline"})
    return published | {"adopted": True}


def _eligible(db: Database, groups: tuple[str, ...]) -> list[str]:
    """The enrolled devices a rollout limited to ``groups`` (none: all) may reach."""
    with db.read() as tx:
        rows = tx.all("SELECT name, grp FROM devices WHERE revoked = 0")
    return [name for name, grp in rows if not groups or grp in groups]


def canary_devices(db: Database, model: str, canary: float, groups: tuple[str, ...] = ()) -> tuple[list[str], int]:
    """(the enrolled devices a canary of ``canary`` percent puts the version on, how many are
    eligible): on a small fleet 50% can be 1 device of 6, and that must be said."""
    eligible = _eligible(db, groups)
    return sorted(n for n in eligible if bucket(n, model) < canary), len(eligible)


def _share_for(db: Database, model: str, canary: float, groups: tuple[str, ...], min_devices: int) -> float:
    """The share that puts at least ``min_devices`` eligible devices in the canary (devices keep
    their place by their stable bucket, so the share is raised to the next device's bucket)."""
    if min_devices <= 0:
        return canary
    places = sorted(bucket(name, model) for name in _eligible(db, groups))
    if min_devices >= len(places):
        raise EdgekitError(f"--min-devices {min_devices} needs more than the {len(places)} eligible device(s): a canary "
                           "on all of them leaves no baseline to compare with",
                           "lower --min-devices, or enrol more devices")
    return max(canary, min(round(places[min_devices - 1] + 0.01, 2), 100.0))


def start_rollout(db: Database, model: str, version: str, canary: float, groups: tuple[str, ...] = (),
                  shadow: bool = False, min_devices: int = 0) -> Rollout:
    """Begin (or widen) the rollout of ``version``; the baseline is what every device ran before:
    the last promoted (or adopted) version, and for a first rollout the version the field logs."""
    if not 0 < canary <= 100:
        raise EdgekitError(f"--canary {canary}% is not a share", "give 1% to 100%")
    release(db, model, version)
    canary = _share_for(db, model, canary, groups, min_devices)
    chosen, eligible = canary_devices(db, model, canary, groups)
    counts = {"devices": len(chosen), "of": eligible}
    now = time.time()
    previous = current_rollout(db, model)
    field = _field_baseline(db, model, version) if previous is None else None
    with db.connect() as tx:
        if previous is not None and previous.version == version and previous.state in ("canary", "paused"):
            if canary < previous.canary:
                raise EdgekitError(f"the canary of {model} {version} is at {previous.canary:g}%; it only grows",
                                   "roll back to take the version off devices")
            tx.execute("UPDATE rollouts SET canary = ?, groups = ?, shadow = ?, state = 'canary', updated = ? "
                       "WHERE model = ?", (canary, json.dumps(list(groups)), int(shadow), now, model))
            _event(tx, model, version, "widened", {"canary": canary, "groups": list(groups)} | counts)
        else:
            if previous is not None and previous.state in ("canary", "paused"):
                raise EdgekitError(f"{model} {previous.version} is still in canary",
                                   f"promote or roll it back first (edgekit release promote {model})")
            baseline = previous.version if previous is not None and previous.state == "promoted" else \
                (previous.baseline if previous is not None else field)
            if baseline == version:
                raise EdgekitError(f"{model} {version} is what the fleet runs already")
            tx.execute("DELETE FROM rollouts WHERE model = ?", (model,))
            tx.execute("INSERT INTO rollouts (model, version, baseline, canary, groups, shadow, state, started, updated) "
                       "VALUES (?,?,?,?,?,?,'canary',?,?)",
                       (model, version, baseline, canary, json.dumps(list(groups)), int(shadow), now, now))
            _event(tx, model, version, "canary", {"canary": canary, "groups": list(groups), "shadow": shadow,
                                                  "baseline": baseline} | counts)
    return current_rollout(db, model)


def _field_baseline(db: Database, model: str, version: str) -> Optional[str]:
    """The first rollout's baseline: the version the field logs (devices that run a bundle from a
    file), which must be published, since a rollback sends devices back to it."""
    seen = field_version(db, model, other_than=version)
    if seen is None:
        return None  # a model no device runs yet: nothing to compare with or to return to
    with db.read() as tx:
        published = tx.one("SELECT 1 FROM releases WHERE model = ? AND version = ?", (model, seen[0])) is not None
    if not published:
        raise EdgekitError(f"{seen[1]} device(s) run {model} {seen[0]}, which is not published: a canary could be "
                           "neither compared with it nor rolled back to it",
                           f"adopt it first: edgekit release adopt BUNDLE --model {model} (the .ekb they run)")
    return seen[0]


def set_state(db: Database, model: str, state: str, reason: str, detail: Optional[dict] = None) -> Rollout:
    rollout = current_rollout(db, model)
    if rollout is None:
        raise EdgekitError(f"{model} has no rollout", f"start one: edgekit release rollout {model} VERSION --canary 10%")
    if state not in STATES:
        raise EdgekitError(f"unknown rollout state {state!r}")
    if rollout.state in ("promoted", "rolled_back") and state != rollout.state:
        raise EdgekitError(f"{model} {rollout.version} was already {rollout.state.replace('_', ' ')}",
                           "start a new rollout")
    if state == "rolled_back" and rollout.baseline is None:
        # there is nothing to send devices back to: "rolled back" would leave them where they are
        raise EdgekitError(f"{model} {rollout.version} is the model's first rollout: there is no earlier version to "
                           "roll back to", f"pause it (edgekit release pause {model}), then publish and roll out a fix")
    with db.connect() as tx:
        tx.execute("UPDATE rollouts SET state = ?, updated = ? WHERE model = ?", (state, time.time(), model))
        _event(tx, model, rollout.version, state, {"reason": reason, **(detail or {})})
    return current_rollout(db, model)


def assignment(db: Database, device: str, model: str) -> Assignment:
    """What ``device`` should run of ``model`` now (no version where nothing is assigned)."""
    with db.read() as tx:  # one read transaction: a fleet polls this all the time
        row = tx.one(f"SELECT {_ROLLOUT}, d.grp FROM rollouts r LEFT JOIN devices d ON d.name = ? WHERE r.model = ?",
                     (device, model))
        if row is None:
            return Assignment(model)
        rollout, group = _rollout(row), row[9] or ""
        versions = {r[0]: _release(model, r[0], r[1:]) for r in tx.all(
            "SELECT version, sha256, size, created FROM releases WHERE model = ? AND version IN (?, ?)",
            (model, rollout.version, rollout.baseline or ""))}
    eligible = not rollout.groups or group in rollout.groups
    in_canary = eligible and bucket(device, model) < rollout.canary
    chosen, shadow = rollout.baseline, None
    if rollout.state == "promoted" or (rollout.state in ("canary", "paused") and in_canary):
        chosen = rollout.version
    if rollout.shadow and rollout.state in ("canary", "paused") and in_canary:
        chosen, shadow = rollout.baseline, rollout.version
    if chosen is None or chosen not in versions:
        return Assignment(model, rollout=rollout.state)
    picked = versions[chosen]
    return Assignment(model, picked.version, picked.sha256, picked.size, picked.created, rollout.state, in_canary,
                      versions.get(shadow))


class NotAssigned(EdgekitError):
    """A device reported on a version it was never given (HTTP 409)."""


def report_device(db: Database, device: str, model: str, version: str, state: str, reason: str = "") -> None:
    """A device says what it runs (or that a version failed on it: a failed self-test or crash).
    A failure or a shadow counts only for a version this device is assigned: any enrolled device
    could otherwise roll back a release it never ran; "running" only for a published version."""
    if state not in DEVICE_STATES:
        raise EdgekitError(f"unknown device state {state!r}", "running, shadow or failed")
    if state == "running":
        release(db, model, version)
    else:
        given = assignment(db, device, model)
        if version not in (given.version, given.shadow.version if given.shadow else None):
            raise NotAssigned(f"{device} was not assigned {model} {version}; it may report only on the version it "
                              f"was given ({given.version or 'none'})")
    with db.connect() as tx:
        if state != "shadow":  # a shadow runs beside the served version, which stays the device's
            tx.execute("DELETE FROM device_models WHERE device = ? AND model = ?", (device, model))
            tx.execute("INSERT INTO device_models (device, model, version, state, reason, time) VALUES (?,?,?,?,?,?)",
                       (device, model, version, state, reason[:500], time.time()))
        _event(tx, model, version, f"device {state}", {"device": device, "reason": reason[:500]})


def devices_per_version(db: Database, model: str) -> list[dict]:
    """How many devices run (or shadow, or refused) each version of ``model``, as they reported."""
    with db.read() as tx:
        rows = tx.all("SELECT version, state, COUNT(*) FROM device_models WHERE model = ? GROUP BY version, state "
                      "ORDER BY version, state", (model,))
    return [{"version": v, "state": s, "devices": n} for v, s, n in rows]


def events(db: Database, model: str, limit: int = 50) -> list[dict]:
    with db.read() as tx:
        rows = tx.all("SELECT time, version, event, detail FROM rollout_events WHERE model = ? ORDER BY time DESC "
                      "LIMIT ?", (model, limit))
    return [{"time": r[0], "version": r[1], "event": r[2], "detail": json.loads(r[3])} for r in rows]
