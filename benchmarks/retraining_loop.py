"""The retraining loop end to end: does it recover what drift took, better than labelling at random?

A simulated fleet (edgekit.loop.simulate): the digits CNN on 8 devices with real log stores,
sync clients and a collector process; half the devices see rotated, thicker digits; users
correct 10% of the predictions. Three arms from copies of the same collector database, side by
side in this run, each judged on the held-out digits (never in the fleet's traffic):
- no retraining (the baseline): the current bundle;
- the loop, unattended: triggered by monitoring's alerts, curating 300 examples by entropy and
  novelty with diversity, labelled by the simulated team, trained, gated and released;
- random curation at the same budget (two seeds), everything else the same.

Goals: the loop recovers >= 80% of the accuracy lost to drift; it beats random curation at the
same budget on drifted digits; clean digits lose <= 0.5 points; the loop started on its own.

    .venv/bin/python benchmarks/retraining_loop.py [--budget 300]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401
from _common import Goals, collector, print_table


def _copy(src: Path, dst: Path) -> str:
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    a.backup(b)
    a.close()
    b.close()
    return f"sqlite:///{dst}"


def _arm(name: str, folder: Path, db: Path, fleet, budget: int, strategies: str, diversity: bool, seed: int,
         forced: bool) -> dict:
    from edgekit.loop.config import LoopConfig
    from edgekit.loop.runner import run_once
    from edgekit.loop.simulate import accuracy, write_config

    work = folder / name
    work.mkdir()
    url = _copy(db, work / "collector.db")
    config = write_config(work / "loop.toml", url, fleet, budget, strategies, diversity, seed)
    start = time.perf_counter()
    result = run_once(LoopConfig.load(config), now_flag=forced)
    seconds = time.perf_counter() - start
    run = result["run"]
    gate = (run or {}).get("outputs", {}).get("gate")
    if gate is None:
        return {"arm": name, "status": run["status"] if run else "not started", "reason": run["reason"] if run else
                result["decision"]["reason"], "seconds": seconds}
    import csv

    with open(run["outputs"]["curate"]["queue"]) as f:
        groups = [r["group"] for r in csv.DictReader(f)]
    bundle = gate["bundle"]  # judged even when the gate rejected it: the arms compare curation
    return {"arm": name, "status": run["status"], "trigger": run["trigger"], "seconds": seconds, "reason": run["reason"],
            "drifted_share": groups.count("drifted") / len(groups),
            "drifted": accuracy(bundle, fleet.drifted_eval), "clean": accuracy(bundle, fleet.clean_eval)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=300)
    args = parser.parse_args()
    from edgekit.collector.db import Database
    from edgekit.loop.simulate import accuracy, simulate
    from edgekit.monitor.reference import build_reference, save_reference

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = folder / "fleet.db"
        with collector(f"sqlite:///{db}") as (url, _):
            fleet = simulate(url, f"sqlite:///{db}", folder / "fleet", devices=8)
        save_reference(Database(f"sqlite:///{db}"), build_reference(str(fleet.base_data), "digits-cnn",
                                                                     str(fleet.bundle)))
        os.environ["EDGEKIT_SIM_TRUTH"] = str(fleet.truth)
        base = {"arm": "no retraining", "status": "-", "drifted": accuracy(fleet.bundle, fleet.drifted_eval),
                "clean": accuracy(fleet.bundle, fleet.clean_eval), "seconds": 0.0}
        loop = _arm("loop", folder, db, fleet, args.budget, "{ entropy = 1.0, novelty = 1.0 }", True, 0, False)
        randoms = [_arm(f"random-{s}", folder, db, fleet, args.budget, "{ random = 1.0 }", False, s, True)
                   for s in (0, 1)]
    arms = [base, loop, *randoms]
    lost = base["clean"] - base["drifted"]
    rows = []
    for a in arms:
        recovered = (a["drifted"] - base["drifted"]) / lost if "drifted" in a and lost > 0 else None
        rows.append([a["arm"], a.get("trigger", "-"), a["status"],
                     f"{100 * a['drifted_share']:.0f}%" if "drifted_share" in a else "-",
                     f"{100 * a['drifted']:.1f}%" if "drifted" in a else "-",
                     f"{100 * a['clean']:.1f}%" if "clean" in a else "-",
                     f"{100 * recovered:.0f}%" if recovered is not None else "-", f"{a['seconds']:.0f}"])
    print_table(["arm", "trigger", "status", "queue from drifted", "drifted acc", "clean acc", "loss recovered", "s"],
                rows)
    goals = Goals(__file__)
    ok = loop["status"] == "released"  # the loop's own candidate must also pass its gate
    goals.check("the loop started on its own (monitoring alert) and released", f"{loop['status']}, trigger "
                f"{loop.get('trigger', '-')}" + ("" if ok else f": {loop.get('reason')}"),
                ok and loop.get("trigger") == "alert")
    if not ok:
        return goals.exit_code()
    recovered = (loop["drifted"] - base["drifted"]) / lost
    goals.check(">= 80% of the drifted accuracy lost recovered", f"{100 * recovered:.0f}% ({100 * base['drifted']:.1f}% "
                f"-> {100 * loop['drifted']:.1f}%, clean {100 * base['clean']:.1f}%)", recovered >= 0.8,
                "no retraining")
    done = [r for r in randoms if "drifted" in r]
    mean_random = sum(r["drifted"] for r in done) / len(done) if done else 0.0
    goals.check("beats random curation at the same budget (drifted digits)",
                f"{100 * loop['drifted']:.1f}% vs {100 * mean_random:.1f}% (mean of {len(done)} seeds)",
                bool(done) and loop["drifted"] > mean_random, "random curation")
    drop = 100 * (base["clean"] - loop["clean"])
    goals.check("clean digits lose <= 0.5 points", f"{-drop:+.2f} points ({100 * loop['clean']:.1f}% vs "
                f"{100 * base['clean']:.1f}%)", drop <= 0.5, "no retraining")
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
