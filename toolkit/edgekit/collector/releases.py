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


def start_rollout(db: Database, model: str, version: str, canary: float, groups: tuple[str, ...] = (),
                  shadow: bool = False) -> Rollout:
    """Begin (or widen) the rollout of ``version``; the baseline is what every device ran before:
    the last promoted version."""
    if not 0 < canary <= 100:
        raise EdgekitError(f"--canary {canary}% is not a share", "give 1% to 100%")
    release(db, model, version)
    now = time.time()
    previous = current_rollout(db, model)
    with db.connect() as tx:
        if previous is not None and previous.version == version and previous.state in ("canary", "paused"):
            if canary < previous.canary:
                raise EdgekitError(f"the canary of {model} {version} is at {previous.canary:g}%; it only grows",
                                   "roll back to take the version off devices")
            tx.execute("UPDATE rollouts SET canary = ?, groups = ?, shadow = ?, state = 'canary', updated = ? "
                       "WHERE model = ?", (canary, json.dumps(list(groups)), int(shadow), now, model))
            _event(tx, model, version, "widened", {"canary": canary, "groups": list(groups)})
        else:
            if previous is not None and previous.state in ("canary", "paused"):
                raise EdgekitError(f"{model} {previous.version} is still in canary",
                                   f"promote or roll it back first (edgekit release promote {model})")
            baseline = previous.version if previous is not None and previous.state == "promoted" else \
                (previous.baseline if previous is not None else None)
            if baseline == version:
                raise EdgekitError(f"{model} {version} is what the fleet runs already")
            tx.execute("DELETE FROM rollouts WHERE model = ?", (model,))
            tx.execute("INSERT INTO rollouts (model, version, baseline, canary, groups, shadow, state, started, updated) "
                       "VALUES (?,?,?,?,?,?,'canary',?,?)",
                       (model, version, baseline, canary, json.dumps(list(groups)), int(shadow), now, now))
            _event(tx, model, version, "canary", {"canary": canary, "groups": list(groups), "shadow": shadow,
                                                  "baseline": baseline})
    return current_rollout(db, model)


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


def events(db: Database, model: str, limit: int = 50) -> list[dict]:
    with db.read() as tx:
        rows = tx.all("SELECT time, version, event, detail FROM rollout_events WHERE model = ? ORDER BY time DESC "
                      "LIMIT ?", (model, limit))
    return [{"time": r[0], "version": r[1], "event": r[2], "detail": json.loads(r[3])} for r in rows]
