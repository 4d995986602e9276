"""A week of a fleet under monitoring: is every fault found, how soon, and is anything else paged?

The fleet: 60 camera devices in 6 groups (12 predictions an hour each) and a clean control group
of 3 devices that log batches (1,500 rows an hour each: 108k rows a day, the scale where
statistical tests call everything drift). Pictures are held-out digits with sensor noise; the
outputs are the real digits CNN's. Records go through the collector's own ingest (signals and
sketches derived on arrival), 7 simulated days ending this hour, raw inputs kept for 5% and
summaries for the rest. Users label 10% of predictions, 36 hours late. `edgekit monitor check`'s
evaluation (the default rules) runs every 6 hours of simulated time.

Faults (nothing else changes):
  group  store-b  blurred pictures (a smeared lens)              from hour 72
  group  store-c  a prior shift: digits 1 and 7 at 25% each      from hour 96
  group  store-f  users' labels disagree on 3, 5, 8 and 9 (a concept change seen only through
                  labels, which arrive 36 h late)                 from hour 48
  device store-d-3 frozen camera (the same frame)                from hour 60
  device store-e-5 every call falls back                          from hour 84
  device store-a-7 median latency 0.21 -> 0.50 ms                from hour 100

Per fault: detected or not, hours from its start to the first alert on a scope that holds it, and
the rules that fired. A false alarm is an alert on a scope that holds no fault at that time. Drift
verdicts are compared with Evidently's DataDriftPreset (in its own environment, see
edgekit.convert.tool_env) on the same per-row features of each group and day.

Goals: every fault detected; zero false alarms; dataset-drift verdicts agree with Evidently's on
at least 90% of group-days (the disagreements are printed with both shares).

    .venv/bin/python benchmarks/fleet_monitoring.py [--postgres URL] [--no-evidently]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import _common  # noqa: F401
import numpy as np
from _common import Goals, print_table, scratch

MODEL = "digits-cnn"
HOUR = 3600.0
DAYS = 7
PER_HOUR = 12
BULK_ROWS = 1500
CHECK_EVERY_H = 6
LABEL_SHARE, LABEL_DELAY_H = 0.10, 36
GROUPS = [f"store-{c}" for c in "abcdef"]
NOISE = 0.02


@dataclass(frozen=True)
class Fault:
    name: str
    group: str
    device: str | None  # None: the whole group
    start_h: int


FAULTS = (Fault("blurred pictures", "store-b", None, 72), Fault("prior shift (1 and 7 at 25%)", "store-c", None, 96),
          Fault("labels disagree, 36 h late", "store-f", None, 48), Fault("frozen camera", "store-d", "store-d-3", 60),
          Fault("fallback on every call", "store-e", "store-e-5", 84),
          Fault("latency 0.21 -> 0.50 ms", "store-a", "store-a-7", 100))


def _active(fault: Fault, device: str, group: str, hour: int) -> bool:
    return hour >= fault.start_h and group == fault.group and fault.device in (None, device)


def blur(images: np.ndarray) -> np.ndarray:
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    out = sum(padded[:, :, dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)) / 9.0
    return out.astype(np.float32)


class World:
    """The pictures devices see and the CNN's answers."""

    def __init__(self):
        import torch

        from edgekit.zoo import digits

        _, x_test, _, y_test = digits._split()
        self.torch = torch
        self.module = digits.trained_module().eval()
        self.ref_x, self.ref_y = x_test[::2], y_test[::2]
        self.x, self.y = x_test[1::2], y_test[1::2]
        self.by_class = {c: np.flatnonzero(self.y == c) for c in range(10)}
        self.rng = np.random.default_rng(0)

    def logits(self, images: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.module(self.torch.from_numpy(np.ascontiguousarray(images))).numpy().astype(np.float32)

    def frames(self, n: int, shifted: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if shifted:
            shares = np.full(10, 0.5 / 8)
            shares[[1, 7]] = 0.25
            classes = self.rng.choice(10, n, p=shares)
            idx = np.asarray([self.rng.choice(self.by_class[c]) for c in classes])
        else:
            idx = self.rng.integers(0, len(self.x), n)
        return self.noisy(self.x[idx]), self.y[idx]

    def noisy(self, images: np.ndarray) -> np.ndarray:
        return np.clip(images + self.rng.normal(0, NOISE, images.shape), 0, 1).astype(np.float32)


def devices() -> list[tuple[str, str]]:
    return [(f"{g}-{i}", g) for g in GROUPS for i in range(10)] + [(f"bulk-{i}", "bulk") for i in range(3)]


def populate(url: str, world: World, start: float, features: dict) -> tuple[int, int]:
    """Ingest the week, six hours per sync batch; ``features`` collects each group-day's per-row
    features for the comparison with Evidently. Returns (records, rows)."""
    from edgekit.collector.db import Database, add_device
    from edgekit.collector.ingest import ingest
    from edgekit.features import RECORD, input_features, input_hash
    from edgekit.sync.record import Batch, encode_array

    db = Database(url)
    rng = np.random.default_rng(1)
    frozen = world.noisy(world.x[:1])
    records_n = rows_n = 0
    for name, group in devices():
        add_device(db, name, group=group)
    for name, group in devices():
        next_id, labels_due = 1, []
        for block in range(0, DAYS * 24, CHECK_EVERY_H):
            records, feedback = [], []
            for hour in range(block, block + CHECK_EVERY_H):
                faults = [f for f in FAULTS if _active(f, name, group, hour)]
                kinds = {f.name for f in faults}
                n = BULK_ROWS if group == "bulk" else PER_HOUR
                pics, truth = world.frames(n, shifted="prior shift (1 and 7 at 25%)" in kinds)
                if "blurred pictures" in kinds:
                    pics = blur(pics)
                if "frozen camera" in kinds:
                    pics = np.repeat(frozen, n, axis=0)
                logits = world.logits(pics)
                times = start + (hour + np.sort(rng.random(n))) * HOUR
                stats = input_features("input", pics)  # the device's summaries, and what drift is judged on
                table = features.setdefault((group, hour // 24), defaultdict(list))
                for k, v in row_features(stats, logits).items():
                    table[k].append(v)
                base = 0.50 if "latency 0.21 -> 0.50 ms" in kinds else 0.21
                latency = base * (1 + 0.08 * rng.standard_normal(n if group != "bulk" else 1))
                fallbacks = ["RuntimeError: illegal instruction in conv kernel"] if "fallback on every call" in kinds else []
                if group == "bulk":  # one record of n rows: inputs kept (float16 holds digits' pixels to 0.05%)
                    records.append(_record(name, next_id, float(times[0]), float(latency[0]), fallbacks,
                                           {"logits": encode_array(logits)},
                                           {"input": encode_array(pics.astype(np.float16))}, None))
                    next_id += 1
                    rows_n += n
                    continue
                summaries = {k.split(".", 1)[1]: v.tolist() for k, v in stats.items()}
                for j in range(n):
                    keep = rng.random() < 0.05
                    summary = {"input": {"shape": [1, 1, 8, 8], **{k: v[j] for k, v in summaries.items()}},
                               RECORD: {"hash": input_hash({"input": pics[j:j + 1]})}}  # as LogStore ships it
                    records.append(_record(name, next_id, float(times[j]), float(latency[j]), fallbacks,
                                           {"logits": encode_array(logits[j:j + 1])},
                                           {"input": encode_array(pics[j:j + 1])} if keep else None,
                                           None if keep else summary))
                    if rng.random() < LABEL_SHARE:
                        label = int(truth[j])
                        if "labels disagree, 36 h late" in kinds and label in (3, 5, 8, 9):
                            label = (label + 1) % 10
                        labels_due.append((float(times[j]) + LABEL_DELAY_H * HOUR, next_id, label))
                    next_id += 1
                    rows_n += 1
            # labels are synced when they are given: the ones due by the end of this block
            block_end = start + (block + CHECK_EVERY_H) * HOUR
            for due, rid, label in [d for d in labels_due if d[0] < block_end]:
                feedback.append({"id": rid, "request_id": f"{name}-{rid}", "time": due, "label": label, "outcome": None})
            labels_due = [d for d in labels_due if d[0] >= block_end]
            ingest(db, name, f"{name}-{block}", Batch.dumps(f"store-{name}", records, feedback))
            records_n += len(records)
        print(f"  {name}: {next_id - 1} records", flush=True) if name.endswith("-9") or group == "bulk" else None
    return records_n, rows_n


def row_features(stats: dict, logits: np.ndarray) -> dict[str, np.ndarray]:
    """The per-row features monitoring judges drift on (monitor.signals.drift_features): the
    inputs' statistics and the classifier's class, confidence and entropy."""
    from edgekit.features import output_signals

    out = {f"in.{k}": v for k, v in stats.items() if not k.endswith(".nonfinite")}
    return out | {k: v for k, v in output_signals({"logits": logits}).items()
                  if k in ("out.class", "out.confidence", "out.entropy")}


def _record(device, rid, t, latency, fallbacks, outputs, inputs, summary) -> dict:
    return {"id": rid, "request_id": f"{device}-{rid}", "time": t, "model": MODEL, "version": "1",
            "variant": "fp32" if fallbacks else "int8", "latency_ms": latency, "fallbacks": fallbacks, "cached": False,
            "outputs": outputs, "inputs": inputs, "summary": summary}


def _covers(alert, fault: Fault, hour: int) -> bool:
    """Does the alert's scope hold this fault, active at this hour?"""
    if hour < fault.start_h:
        return False
    key = alert.key or {}
    if not key:
        return True
    if "group" in key:
        return key["group"] == fault.group
    device = key.get("device", "")
    return device == fault.device if fault.device else device.startswith(fault.group + "-")


def watch(url: str, start: float) -> tuple[dict, list]:
    """The default rules every CHECK_EVERY_H hours: fault -> (hours to first alert, rules), false alarms."""
    from edgekit.collector.db import Database
    from edgekit.monitor.rules import DEFAULT_RULES, evaluate

    db = Database(url)
    found: dict = {}
    false_alarms = []
    for hour in range(CHECK_EVERY_H, DAYS * 24 + 1, CHECK_EVERY_H):
        alerts = evaluate(db, MODEL, DEFAULT_RULES, now=start + hour * HOUR)
        for a in alerts:
            held = [f for f in FAULTS if _covers(a, f, hour)]
            if not held:
                false_alarms.append((hour, a))
            for f in held:
                first, rules = found.get(f.name, (hour - f.start_h, set()))
                rules.add(a.rule)
                found[f.name] = (first, rules)
        print(f"  hour {hour:3d}: {len(alerts)} alerts, {len(found)} of {len(FAULTS)} faults found, "
              f"{len(false_alarms)} false alarms so far", flush=True)
    return found, false_alarms


def edgekit_drift(url: str, start: float) -> dict:
    """(group, day) -> (dataset drift verdict, share) from the collector's sketches."""
    from edgekit.collector.db import Database
    from edgekit.monitor.signals import snapshot

    db = Database(url)
    out = {}
    for day in range(DAYS):
        snap = snapshot(db, MODEL, start + day * 24 * HOUR, start + (day + 1) * 24 * HOUR, by=("group",), series=False,
                        raw_suite=False, signals={"drift.dataset", "drift.share", "drift.rows"})
        for s in snap.scopes:
            out[(s.key["group"], day)] = (bool(s.signals["drift.dataset"]), s.signals["drift.share"])
    return out


EVIDENTLY = r'''
import json, sys
import numpy as np, pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

folder = sys.argv[1]
ref = dict(np.load(f"{folder}/reference.npz"))
columns = sorted(ref)
numeric = [c for c in columns if c != "out.class"]
definition = DataDefinition(numerical_columns=numeric, categorical_columns=["out.class"])
reference = Dataset.from_pandas(pd.DataFrame(ref), data_definition=definition)
out = {}
for name in json.load(open(f"{folder}/scopes.json")):
    current = Dataset.from_pandas(pd.DataFrame(dict(np.load(f"{folder}/{name}.npz"))), data_definition=definition)
    result = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference).dict()
    share = next(m["value"]["share"] for m in result["metrics"] if m["metric_name"].startswith("DriftedColumnsCount"))
    out[name] = share
print(json.dumps(out))
'''


def evidently_drift(work: Path, world: World, features: dict) -> dict | None:
    """(group, day) -> (Evidently's dataset drift verdict, share), or None where it cannot run."""
    from edgekit.convert.tool_env import ensure, missing_reason
    from edgekit.features import input_features

    python = ensure("evidently")
    if python is None:
        print(f"Evidently skipped: {missing_reason('evidently')}")
        return None
    ref_pics = world.noisy(world.ref_x)
    ref = row_features(input_features("input", ref_pics), world.logits(ref_pics))
    folder = work / "evidently"
    folder.mkdir()
    np.savez(folder / "reference.npz", **ref)
    names = {}
    for (group, day), table in features.items():
        name = f"{group}-day{day}"
        names[name] = (group, day)
        np.savez(folder / f"{name}.npz", **{k: np.concatenate(v) for k, v in table.items() if k in ref})
    (folder / "scopes.json").write_text(json.dumps(sorted(names)))
    (folder / "run.py").write_text(EVIDENTLY)
    done = subprocess.run([str(python), str(folder / "run.py"), str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"Evidently failed: {done.stderr[-2000:]}")
    shares = json.loads(done.stdout.strip().splitlines()[-1])
    return {names[n]: (share >= 0.5, share) for n, share in shares.items()}


def reference(url: str, work: Path, world: World) -> None:
    """The reference: the other half of the held-out digits, through the same camera noise."""
    from edgekit.collector.db import Database
    from edgekit.monitor.reference import build_reference, save_reference

    pics = world.noisy(world.ref_x)
    np.savez(work / "reference.npz", input=pics, labels=world.ref_y, **{"outputs/logits": world.logits(pics)})
    save_reference(Database(url), build_reference(work / "reference.npz", MODEL))


def run(kind: str, url: str, work: Path, goals: Goals, compare: bool) -> None:
    world = World()
    start = (time.time() // HOUR) * HOUR - DAYS * 24 * HOUR
    features: dict = {}
    t0 = time.perf_counter()
    print(f"{kind}: ingesting a week of {len(devices())} devices ...", flush=True)
    records, rows = populate(url, world, start, features)
    reference(url, work, world)
    print(f"{kind}: {records:,} records ({rows:,} rows) in {time.perf_counter() - t0:.0f} s; checking every "
          f"{CHECK_EVERY_H} h ...", flush=True)
    t0 = time.perf_counter()
    found, false_alarms = watch(url, start)
    check_s = (time.perf_counter() - t0) / (DAYS * 24 // CHECK_EVERY_H)
    table = []
    for f in FAULTS:
        hours, rules = found.get(f.name, (None, set()))
        table.append([f.name, f.device or f"group {f.group}", f.start_h, "yes" if hours is not None else "NO",
                      "-" if hours is None else hours, ", ".join(sorted(rules)) or "-"])
    print()
    print_table(["fault", "where", "from hour", "detected", "hours to alert", "rules that fired"], table)
    bulk_rows = max(sum(len(v) for v in t["in.input.mean"]) for (g, _), t in features.items() if g == "bulk")
    print(f"\nclean control: {bulk_rows:,} rows per day in group bulk; one check took {check_s:.1f} s")
    for hour, a in false_alarms[:20]:
        print(f"  false alarm at hour {hour}: {a.line()}")
    missed = [f.name for f in FAULTS if f.name not in found]
    goals.check(f"{kind}: every injected fault detected", f"{len(found)} of {len(FAULTS)}"
                + (f" (missed: {', '.join(missed)})" if missed else ""), not missed, baseline="the injected faults")
    goals.check(f"{kind}: no false alarm on clean scopes (incl. {bulk_rows:,} rows a day in the control)",
                f"{len(false_alarms)} false alarms", not false_alarms, baseline="zero")
    if not compare:
        return
    ours = edgekit_drift(url, start)
    theirs = evidently_drift(work, world, features)
    if theirs is None:
        return
    keys = sorted(set(ours) & set(theirs))
    agree = [k for k in keys if ours[k][0] == theirs[k][0]]
    print(f"\ndataset drift per group-day: edgekit and Evidently agree on {len(agree)} of {len(keys)}")
    for k in keys:
        if ours[k][0] != theirs[k][0]:
            print(f"  {k[0]} day {k[1]}: edgekit share {ours[k][1]:.2f} ({'drift' if ours[k][0] else 'none'}), "
                  f"Evidently share {theirs[k][1]:.2f} ({'drift' if theirs[k][0] else 'none'})")
    goals.check(f"{kind}: dataset-drift verdicts agree with Evidently's DataDriftPreset",
                f"{len(agree)} of {len(keys)} group-days ({len(agree) / max(len(keys), 1):.0%})",
                len(agree) >= 0.9 * len(keys), baseline="Evidently 0.7.23, same per-row features")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", default=os.environ.get("EDGEKIT_TEST_POSTGRES"),
                        help="PostgreSQL URL (default: $EDGEKIT_TEST_POSTGRES); without one only SQLite runs")
    parser.add_argument("--no-evidently", action="store_true", help="skip the comparison with Evidently")
    args = parser.parse_args()
    from monitor_report import _drop_schema, _fresh_schema

    goals = Goals(__file__)
    work = scratch("fleet-monitoring-")
    run("sqlite", f"sqlite:///{work / 'collector.db'}", work, goals, not args.no_evidently)
    if args.postgres:
        url = _fresh_schema(args.postgres)
        try:
            (work / "pg").mkdir()
            run("postgresql", url, work / "pg", goals, False)
        finally:
            _drop_schema(url)
    else:
        print("PostgreSQL skipped: set EDGEKIT_TEST_POSTGRES or --postgres to run the fleet on it too")
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
