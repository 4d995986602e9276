"""The loop: one run is trigger -> curate -> label -> dataset -> train -> gate -> release.

Each step writes its outputs under the run directory and then records itself done in the
collector database; a crash (or Ctrl-C) at any point resumes at the first unfinished step on the
next ``loop run``, and a step that failed is retried there. A run that waits for people to label
its queue says so and returns; the next call picks it up.
"""

from __future__ import annotations

import secrets
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from ..errors import EdgekitError
from ..monitor.rules import parse_duration
from .config import LoopConfig
from .state import Run, add_to_queue, create_run, labelled_in_queue, last_run, loop_lock, open_run, queued_keys, save_run

STEPS = ("curate", "label", "dataset", "train", "gate", "release")


class Waiting(Exception):
    """The step cannot finish yet (labels are out with people)."""


class Stop(Exception):
    """The run ends here without a release, for a reason that is not an error (no data)."""


class Context:
    def __init__(self, config: LoopConfig, db, progress: Callable[[str], None]):
        self.config, self.db, self.say = config, db, progress
        self.work = config.work
        self.current = str(config.path(config.current))


def step_curate(ctx: Context, run: Run) -> dict:
    from .curate import curate
    from .queue import read_queue_keys, write_queue

    c = ctx.config
    folder = Path(run.directory)
    since = run.started - parse_duration(c.curation.window)
    pool = folder / "pool"
    if not pool.exists():
        from ..collector.export import export

        source = ctx.db
        if c.curation.lake:
            from ..lake.read import LakeDatabase

            source = LakeDatabase(c.path(c.curation.lake), c.curation.engine, c.curation.spark_master)
        ctx.say(f"exporting the pool: {c.model} predictions since {_stamp(since)}"
                + (f" from the lake {c.curation.lake} ({c.curation.engine})" if c.curation.lake else ""))
        try:
            export(source, pool, since=str(since), model=c.model, fmt="parquet", until=run.started, as_of=run.started)
        except EdgekitError as exc:
            if "no logged predictions" in str(exc):
                raise Stop(f"no logged inputs of {c.model} since {_stamp(since)} to curate") from None
            raise
        finally:
            if source is not ctx.db:
                source.close()
    other = None
    if c.curation.other:
        from ..testing.models import Predictor

        other = Predictor(str(c.path(c.curation.other)))
    ctx.say("scoring the pool")
    selection = curate(str(pool), c.curation, exclude=queued_keys(ctx.db, c.model), other=other,
                       reference=_history(ctx))
    queue = folder / "queue"
    if not len(selection.rows) and not queue.exists():  # a run asked for now, right after another
        ctx.say("nothing new to label: every logged prediction of the window is labelled or queued already")
        return {**selection.to_dict(), "queue": None, "queued_at": time.time()}
    if not queue.exists():
        write_queue(pool, selection, queue)
    keys = read_queue_keys(queue)
    add_to_queue(ctx.db, c.model, run.run_id, keys, time.time())
    return {**selection.to_dict(), "queue": str(queue / "queue.csv"), "queued_at": time.time()}


def step_label(ctx: Context, run: Run) -> dict:
    from .queue import import_labels, label_with_hook

    c = ctx.config
    folder = Path(run.directory)
    if c.labeler and run.outputs["curate"]["queue"]:
        labels = folder / "labels.csv"
        if not labels.exists():
            ctx.say(f"labelling the queue with {c.labeler}")
            label_with_hook(c.labeler, folder / "queue", labels)
        import_labels(ctx.db, labels)
    total, done = labelled_in_queue(ctx.db, c.model, run.run_id)
    waited = time.time() - run.outputs["curate"]["queued_at"]
    if done < total and waited < parse_duration(c.label_wait):
        raise Waiting(f"{done} of {total} queued examples labelled; label {run.outputs['curate']['queue']} and run "
                      f"'edgekit label import' (the run goes on with what came back after {c.label_wait})")
    return {"queued": total, "labelled": done}


def step_dataset(ctx: Context, run: Run) -> dict:
    from .dataset import new_data_export

    c = ctx.config
    folder = Path(run.directory)
    as_of = run.outputs.get("dataset_as_of") or time.time()
    run.outputs["dataset_as_of"] = as_of
    since = run.started - parse_duration(c.curation.window)
    new = folder / "new.npz"
    if not new.exists() and new_data_export(ctx.db, c.model, since, run.started, as_of, new) is None:
        raise Stop("no labelled predictions in the window: nothing new to learn from")
    try:
        return _form(ctx, run, new, since, as_of)
    except (EdgekitError, OSError, ValueError):
        # A retry must see the labels as they are then (corrected ones included), not this export.
        new.unlink(missing_ok=True)
        run.outputs.pop("dataset_as_of", None)
        raise


def _form(ctx: Context, run: Run, new: Path, since: float, as_of: float) -> dict:
    from ..bundle import read_manifest
    from ..tables import open_table
    from .dataset import form_dataset
    from .gate import grow_hard_cases

    c = ctx.config
    rows = open_table(new).rows
    if rows < c.min_new_labels:
        raise Stop(f"only {rows} new labelled examples (min_new_labels = {c.min_new_labels})")
    inputs = [s.name for s in read_manifest(ctx.current).inputs]
    keep = sorted((ctx.work / "keep").glob("*.npz")) if (ctx.work / "keep").is_dir() else []
    history = _history(ctx)
    out = ctx.work / "datasets" / run.run_id
    query = {"model": c.model, "since": since, "until": run.started, "as_of": as_of}
    if out.exists():
        import json

        manifest = json.loads((out / "manifest.json").read_text())
    else:
        ctx.say(f"forming the data set from {rows} new labelled examples")
        manifest = form_dataset(new, out, inputs, c.dataset, keep, history, query)
    hard = grow_hard_cases(ctx.current, new, ctx.work / "hardcases.npz")
    return {"folder": str(out), "splits": {k: v["rows"] for k, v in manifest["splits"].items()},
            "sources": manifest["splits"]["train"]["sources"], "new_rows": rows, "hard_cases": hard}


def _history(ctx: Context) -> list[Path]:
    """Earlier training data: the base data and the last released run's training split."""
    c = ctx.config
    history = [c.path(c.base_data)] if c.base_data else []
    previous = last_run(ctx.db, c.model, ("released",))
    if previous and previous.outputs.get("dataset", {}).get("folder"):
        history.append(Path(previous.outputs["dataset"]["folder"]) / "train.npz")
    return [p for p in history if p.exists()]


def step_train(ctx: Context, run: Run) -> dict:
    from .train import run_training

    c = ctx.config
    ctx.say(f"training with {c.train}")
    return run_training(c.train, Path(run.outputs["dataset"]["folder"]), ctx.current, Path(run.directory) / "train",
                        parse_duration(c.train_timeout))


def step_gate(ctx: Context, run: Run) -> dict:
    from ..bundle import read_manifest
    from .gate import judge, package_candidate

    c = ctx.config
    folder = Path(run.directory) / "gate"
    dataset = Path(run.outputs["dataset"]["folder"])
    version = _next_version(read_manifest(ctx.current).model.version, run.run_id, _taken_versions(ctx))
    bundle = folder / "candidate.ekb"
    packaged = {"bundle": str(bundle)}
    if not bundle.exists():
        if (folder / "optimized").exists():  # a crash between optimize and packaging
            shutil.rmtree(folder / "optimized")
        ctx.say(f"optimising the candidate for {c.target}")
        packaged = package_candidate(run.outputs["train"]["model"], ctx.current, dataset, c.target, folder, version,
                                     c.gate.formats, sign_key=str(c.path(c.sign_key)) if c.sign_key else None,
                                     progress=lambda msg: ctx.say(f"  optimise: {msg}"))
    ctx.say("report card: candidate against the current model")
    verdict = judge(str(bundle), ctx.current, dataset, folder, c.gate, ctx.work / "hardcases.npz")
    return {**packaged, **verdict, "version": version}


def step_release(ctx: Context, run: Run) -> dict:
    c = ctx.config
    gate = run.outputs["gate"]
    if not gate["passed"]:
        raise Stop("the candidate failed the gate: " + "; ".join(gate["failed"]))
    target = ctx.work / "releases" / f"{c.model}-{gate['version']}.ekb"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(gate["bundle"], tmp)
        tmp.replace(target)
    out = {"bundle": str(target), "version": gate["version"]}
    if c.publish_store:  # handed to the fleet-update step: the registry, and a canary if asked
        from ..collector.releases import adopt, canary_devices, current_rollout, publish, start_rollout

        out["published"] = publish(ctx.db, c.path(c.publish_store), target, c.model, gate["version"])
        ctx.say(f"published {c.model} {gate['version']} to {c.publish_store}")
        rollout = current_rollout(ctx.db, c.model)
        if c.canary and rollout is None:
            # The loop's first release: devices run the current bundle from a file. It becomes the
            # baseline, so the canary is compared with what is in the field and can roll back to it.
            out["adopted"] = adopt(ctx.db, c.path(c.publish_store), Path(ctx.current), c.model)
            ctx.say(f"adopted {c.model} {out['adopted']['version']} (the current bundle) as the fleet's baseline")
        if c.canary and not (rollout and rollout.version == gate["version"]):
            try:
                started = start_rollout(ctx.db, c.model, gate["version"], c.canary, min_devices=c.canary_min_devices)
            except EdgekitError as exc:  # the release stays published; the run resumes here
                raise EdgekitError(f"{c.model} {gate['version']} is published but its canary did not start: "
                                   f"{exc.message}", f"{exc.hint or 'see edgekit release status ' + c.model}; then run "
                                   "the loop again: it resumes at the release") from None
            chosen, eligible = canary_devices(ctx.db, c.model, started.canary, started.groups)
            out["rollout"] = started.to_dict() | {"canary_devices": chosen, "eligible_devices": eligible}
            ctx.say(f"canary: {c.model} {gate['version']} on {started.canary:g}% of devices ({len(chosen)} of "
                    f"{eligible}), baseline {started.baseline or '-'}")
    return out


STEP_FUNCTIONS = {"curate": step_curate, "label": step_label, "dataset": step_dataset, "train": step_train,
                  "gate": step_gate, "release": step_release}


def _taken_versions(ctx: Context) -> set[str]:
    """Versions of the model already released: by this loop's earlier runs, or published in the
    registry (a second run before the fleet moves on must not reuse the first one's number)."""
    model = ctx.config.model
    taken = {p.stem[len(model) + 1:] for p in (ctx.work / "releases").glob(f"{model}-*.ekb")}
    with ctx.db.read() as tx:
        taken |= {row[0] for row in tx.all("SELECT version FROM releases WHERE model = ?", (model,))}
    return taken


def _next_version(current: Optional[str], run_id: str, taken: frozenset | set = frozenset()) -> str:
    """The version after the current bundle's and every one already taken (numbers count up)."""
    if current and current.isdigit():
        return str(max([int(current)] + [int(v) for v in taken if v.isdigit()]) + 1)
    return f"{current or '0'}+{run_id}"


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run_once(config: LoopConfig, now_flag: bool = False, progress: Callable[[str], None] = lambda m: None,
             stop_after: Optional[str] = None) -> dict:
    """One pass: resume the open run, or ask the triggers whether to start one, then go as far as
    possible. ``stop_after``: end after this step (tests use it to stand in for a crash)."""
    from ..collector.db import Database
    from .triggers import decide

    db = Database(config.db_url)
    ctx = Context(config, db, progress)
    if not Path(ctx.current).exists():
        raise EdgekitError(f"the current bundle {ctx.current} does not exist", "set 'current' in loop.toml")
    with loop_lock(db, config.model):
        run = open_run(db, config.model)
        if run is None:
            now = time.time()
            decision = decide(config, db, now, forced=now_flag)
            if not decision.retrain:
                return {"run": None, "decision": decision.__dict__}
            run_id = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)
            folder = config.work / "runs" / run_id
            folder.mkdir(parents=True, exist_ok=True)
            run = Run(run_id, config.model, now, now, "trigger", "running", decision.trigger, decision.reason,
                      str(folder), {"trigger": {"reason": decision.reason, **decision.numbers}})
            create_run(db, run)
            with db.connect() as tx:
                tx.execute("UPDATE loop_decisions SET run_id = ? WHERE model = ? AND time = ?",
                           (run_id, config.model, now))
        return _advance(ctx, run, stop_after)


def _advance(ctx: Context, run: Run, stop_after: Optional[str]) -> dict:
    start = STEPS.index(run.step) + 1 if run.step in STEPS else 0
    for step in STEPS[start:]:
        run.status = "running"
        try:
            run.outputs[step] = STEP_FUNCTIONS[step](ctx, run)
        except Waiting as wait:
            run.status, run.reason = "waiting", str(wait)
            save_run(ctx.db, run)
            return {"run": run.to_dict()}
        except Stop as stop:
            run.status = "rejected" if step == "release" else "stopped"
            run.reason = str(stop)
            save_run(ctx.db, run)
            return {"run": run.to_dict()}
        except BaseException as exc:
            run.status = "failed"
            run.reason = f"{step}: {exc}".split("\n")[0][:500]
            save_run(ctx.db, run)
            raise
        run.step = step
        save_run(ctx.db, run)
        ctx.say(f"{step}: done")
        if step == stop_after:
            return {"run": run.to_dict()}
    run.status = "released"
    run.reason = f"release {run.outputs['release']['version']}: {run.outputs['release']['bundle']}"
    save_run(ctx.db, run)
    return {"run": run.to_dict()}


def run_forever(config: LoopConfig, interval_s: float, progress: Callable[[str], None]) -> None:
    """The daemon: a pass every ``interval_s``; an error in one pass is reported and retried at
    the next (the failed step resumes)."""
    while True:
        try:
            result = run_once(config, progress=progress)
            progress(_summary(result))
        except EdgekitError as exc:
            progress(f"error: {exc}")
        time.sleep(interval_s)


def _summary(result: dict) -> str:
    run = result.get("run")
    if run is None:
        d = result["decision"]
        return f"no retraining ({d['trigger']}): {d['reason']}"
    return f"run {run['run_id']}: {run['status']} after {run['step']}: {run['reason']}"
