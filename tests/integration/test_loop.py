"""The retraining loop on a simulated fleet: the digits bundle on real device log stores, real sync
clients and a real collector process; half the devices see rotated, thicker digits.

The loop, unattended, notices the drift through monitoring, curates within a labelling budget,
forms a data set, trains, passes the gate and releases; a crash in the middle resumes without
repeating finished steps; a queue waits for people's labels; every decision is recorded.
"""

import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _services import Collector

pytest.importorskip("scipy")
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _config(folder, url, bundle, fleet, labeler=True, extra=""):
    from edgekit.loop.simulate import write_config

    return write_config(folder / "loop.toml", url, fleet, budget=200, labeler=labeler, extra=extra)


@pytest.fixture(scope="module")
def world(tmp_path_factory, make_database):
    from edgekit.collector.db import Database
    from edgekit.loop.simulate import simulate
    from edgekit.monitor.reference import build_reference, save_reference

    folder = tmp_path_factory.mktemp("loop")
    with make_database("sqlite", folder) as url:
        collector = Collector(url).start()
        try:
            fleet = simulate(collector.url, url, folder / "fleet", devices=6)
        finally:
            collector.stop()
        save_reference(Database(url), build_reference(str(fleet.base_data), "digits-cnn", str(fleet.bundle)))
        os.environ["EDGEKIT_SIM_TRUTH"] = str(fleet.truth)
        yield {"url": url, "fleet": fleet, "bundle": fleet.bundle, "folder": folder}


def _copy_db(world, tmp_path):
    """Each test starts from the same fleet log: a copy of the collector's database (SQLite's
    backup API: the file alone misses what is still in its write-ahead log)."""
    import sqlite3

    src = sqlite3.connect(world["url"][len("sqlite:///"):])
    dst = sqlite3.connect(tmp_path / "collector.db")
    src.backup(dst)
    src.close()
    dst.close()
    return f"sqlite:///{tmp_path / 'collector.db'}"


def test_the_loop_notices_drift_retrains_and_releases(world, tmp_path, cli):
    from edgekit.loop.simulate import accuracy

    url = _copy_db(world, tmp_path)
    # the README's expectation suite, suggested from a keyed feed, as the gate's expectations
    with np.load(world["fleet"].base_data) as npz:
        np.savez(tmp_path / "keyed.npz", **{k: npz[k] for k in npz.files}, key=np.arange(len(npz["labels"])))
    suggested = cli("test", "expect", "suggest", "--data", tmp_path / "keyed.npz", "--key", "key")
    assert suggested.exit_code == 0, suggested.output
    (tmp_path / "suite.toml").write_text(suggested.output)
    config = _config(tmp_path, url, world["bundle"], world["fleet"], extra=f'expect = "{tmp_path / "suite.toml"}"')
    config.write_text(f'publish_store = "{tmp_path / "store"}"\ncanary = 10.0\n' + config.read_text())
    result = cli("loop", "run", "--config", config, "--once", "--json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)["run"]
    assert run["status"] == "released", run["reason"]
    assert run["trigger"] == "alert" and "group=drifted" in run["outputs"]["trigger"]["reason"]  # monitoring said why
    assert run["outputs"]["curate"]["selected"] == 200 and run["outputs"]["label"]["labelled"] == 200
    checks = {c["name"]: c["passed"] for c in run["outputs"]["gate"]["checks"]}
    assert checks == {"overall accuracy": True, "calibration (ECE)": True, "worst slice": True,
                      "hard-case suite": True, "data expectations": True, "memorisation": True}
    detail = next(c["detail"] for c in run["outputs"]["gate"]["checks"] if c["name"] == "data expectations")
    assert "dtype on key" in detail and "label_distribution (curation picks" in detail, detail
    sources = run["outputs"]["dataset"]["sources"]
    assert sources["curated"] > 0 and sources["feedback"] > 0 and sources["history"] > 0
    # curation went where the model is unsure: the drifted devices
    with open(run["outputs"]["curate"]["queue"]) as f:
        groups = [r["group"] for r in csv.DictReader(f)]
    assert groups.count("drifted") > 0.8 * len(groups)
    release = run["outputs"]["release"]["bundle"]
    # handed to the fleet: published in the registry and on a 10% canary
    assert run["outputs"]["release"]["rollout"]["state"] == "canary"
    # the fleet ran the current bundle from a file: it is adopted as the baseline, so the canary
    # is judged against it and can roll back to it (it waited forever without one)
    from edgekit.bundle import read_manifest

    field = read_manifest(world["bundle"]).model.version
    assert run["outputs"]["release"]["adopted"]["version"] == field
    assert run["outputs"]["release"]["rollout"]["baseline"] == field
    assert run["outputs"]["release"]["rollout"]["eligible_devices"] > 0
    status = cli("release", "status", "digits-cnn", "--db", url)  # readable without --json
    assert status.exit_code == 0 and f"(baseline {field})" in status.output and "device(s) in the canary" in status.output
    assert "adopted" in status.output and "canary" in status.output.split("events")[1]
    assert (tmp_path / "store" / f"{run['outputs']['release']['published']['sha256']}.ekb").is_file()
    before, after = accuracy(world["bundle"], world["fleet"].drifted_eval), accuracy(release, world["fleet"].drifted_eval)
    assert after > before + 0.4, (before, after)
    assert accuracy(release, world["fleet"].clean_eval) >= accuracy(world["bundle"], world["fleet"].clean_eval) - 0.02
    manifest = json.loads((tmp_path / "work" / "datasets" / run["run_id"] / "manifest.json").read_text())
    assert manifest["query"]["model"] == "digits-cnn" and set(manifest["splits"]) == {"train", "val", "test"}
    # the data set is rebuilt from its manifest, hash for hash, also after people corrected a
    # label it holds (the correction is newer than the data set: it trains the next one)
    queue = Path(run["outputs"]["curate"]["queue"])
    with open(queue, newline="") as f:
        rows = list(csv.DictReader(f))
    from edgekit.collector.db import Database

    with Database(url).read() as tx:
        given = tx.one("SELECT label FROM feedback WHERE request_id = ? ORDER BY time DESC LIMIT 1",
                       (rows[0]["request_id"],))[0]
    rows[0]["label"] = str((int(given) + 1) % 10)
    with open(tmp_path / "corrected.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:1])
    corrected = cli("label", "import", tmp_path / "corrected.csv", "--db", url)
    assert corrected.exit_code == 0, corrected.output
    again = cli("loop", "rebuild", tmp_path / "work" / "datasets" / run["run_id"] / "manifest.json",
                "--out", tmp_path / "again", "--db", url, "--json")
    assert again.exit_code == 0, again.output
    assert "1 new or changed" in corrected.output, corrected.output
    history = cli("loop", "history", "--config", config, "--json")
    listed = json.loads(history.output)
    assert listed["runs"][0]["status"] == "released" and listed["decisions"][0]["retrain"]
    plain = cli("loop", "history", "--config", config)  # the tables it built and never printed
    assert run["run_id"] in plain.output and "released" in plain.output and "decisions" in plain.output
    # its canary undecided, the next run is held back, --now too (its release could not roll out:
    # a second run trained, gated and published v3, then failed on "2 is still in canary")
    for now_flag in ((), ("--now",)):
        again = json.loads(cli("loop", "run", "--config", config, "--once", "--json", *now_flag).output)
        assert again["run"] is None and again["decision"]["trigger"] == "canary", again
        assert "is still in canary on the fleet: decide it first" in again["decision"]["reason"]
    assert cli("release", "promote", "digits-cnn", "--reason", "test", "--db", url).exit_code == 0
    # then the cool-down holds the next one back, and says so
    again = json.loads(cli("loop", "run", "--config", config, "--once", "--json").output)
    assert again["run"] is None and again["decision"]["trigger"] == "cooldown"



def test_a_run_asked_for_now_with_nothing_new_to_label_goes_on_with_the_labels_at_hand(world, tmp_path):
    """The README's `loop run --now` right after a run whose budget queued the whole window failed
    at curate ("nothing was selected for labelling"), though the window's labels were there to
    train on: the run now skips the queue and goes on."""
    from edgekit.collector.db import Database
    from edgekit.loop.config import LoopConfig
    from edgekit.loop.runner import Context, step_curate, step_dataset, step_label
    from edgekit.loop.simulate import write_config
    from edgekit.loop.state import Run

    url = _copy_db(world, tmp_path)
    config = LoopConfig.load(write_config(tmp_path / "loop.toml", url, world["fleet"], budget=100000, diversity=False))
    ctx = Context(config, Database(url), lambda line: None)
    runs = []
    for n in range(2):
        folder = tmp_path / f"run-{n}"
        folder.mkdir()
        run = Run(f"run-{n}", "digits-cnn", time.time(), time.time(), "trigger", "running", "now", "asked",
                  str(folder), {})
        run.outputs["curate"] = step_curate(ctx, run)
        run.outputs["label"] = step_label(ctx, run)
        runs.append(run)
    first, second = (r.outputs for r in runs)
    assert first["curate"]["selected"] > 0 and first["label"]["labelled"] == first["label"]["queued"]
    assert second["curate"]["selected"] == 0 and second["curate"]["queue"] is None
    assert second["label"] == {"queued": 0, "labelled": 0}
    dataset = step_dataset(ctx, runs[1])  # formed from the labels the first run's queue brought
    assert dataset["new_rows"] >= first["label"]["labelled"]
    # its release must not reuse the first run's version (it kept the first's file and said "released 2")
    from edgekit.loop.runner import _next_version, _taken_versions

    assert _next_version("1", "run-1", _taken_versions(ctx)) == "2"
    (config.work / "releases").mkdir(parents=True)
    (config.work / "releases" / "digits-cnn-2.ekb").write_bytes(b"")
    assert _next_version("1", "run-1", _taken_versions(ctx)) == "3"
    with ctx.db.connect() as tx:  # published by hand, or by another loop
        tx.execute("INSERT INTO releases (model, version, sha256, size, created, signed) VALUES ('digits-cnn', '7', ?, 1, 0, 0)",
                   ("0" * 64,))
    assert _next_version("1", "run-1", _taken_versions(ctx)) == "8"

def _trainers(folder) -> list[str]:
    """Live training processes working under ``folder`` (from /proc: no procps needed)."""
    found = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as f:
                args = f.read().split(b"\0")
            with open(cmdline.replace("cmdline", "stat")) as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        text = b" ".join(args).decode(errors="replace")
        if "edgekit.loop.train" in text and str(folder) in text and not zombie:
            found.append(text)
    return found


def test_a_crash_during_training_resumes_without_repeating_finished_steps(world, tmp_path):
    from edgekit.collector.db import Database
    from edgekit.loop.state import open_run

    url = _copy_db(world, tmp_path)
    config = _config(tmp_path, url, world["bundle"], world["fleet"])
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "loop", "run", "--config", str(config), "--once",
                             "--now"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while not list((tmp_path / "work" / "runs").glob("*/train/train.log")) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the loop only: its trainer must not live on
    proc.wait()
    for _ in range(100):  # the kernel delivers the trainer's parent-death signal
        if not _trainers(tmp_path):
            break
        time.sleep(0.05)
    assert not _trainers(tmp_path), "the trainer outlived the loop"
    db = Database(url)
    run = open_run(db, "digits-cnn")
    assert run is not None and run.step == "dataset" and run.status == "running"  # curated, labelled, formed
    queue = tmp_path / "work" / "runs" / run.run_id / "queue" / "queue.csv"
    queued_at = queue.stat().st_mtime_ns
    with db.read() as tx:
        labels_before = tx.one("SELECT COUNT(*), MAX(received) FROM feedback WHERE store = 'edgekit-labels'")
    from edgekit.loop.config import LoopConfig
    from edgekit.loop.runner import run_once

    result = run_once(LoopConfig.load(config))
    assert result["run"]["run_id"] == run.run_id and result["run"]["status"] == "released"
    assert queue.stat().st_mtime_ns == queued_at  # not curated again
    with db.read() as tx:
        # labels not imported again
        assert tx.one("SELECT COUNT(*), MAX(received) FROM feedback WHERE store = 'edgekit-labels'") == labels_before
        assert tx.one("SELECT COUNT(*) FROM loop_decisions")[0] == 1  # one decision, one run
        assert tx.one("SELECT COUNT(*) FROM loop_runs")[0] == 1


def test_a_queue_waits_for_people_and_their_labels_come_back_as_feedback(world, tmp_path, cli):
    url = _copy_db(world, tmp_path)
    config = _config(tmp_path, url, world["bundle"], world["fleet"], labeler=False)
    first = json.loads(cli("loop", "run", "--config", config, "--once", "--now", "--json").output)["run"]
    assert first["status"] == "waiting" and "0 of 200" in first["reason"]
    queue = tmp_path / "work" / "runs" / first["run_id"] / "queue"
    assert len(list((queue / "images").glob("*.png"))) == 200  # people see the digits
    truth = json.loads(world["fleet"].truth.read_text())
    with open(queue / "queue.csv") as f:
        lines = list(csv.DictReader(f))
    for line in lines:
        line["label"] = truth[f"{line['device']}/{line['request_id']}"]
    filled = tmp_path / "labels.csv"
    with open(filled, "w", newline="") as f:
        writer = csv.DictWriter(f, list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)
    bad = tmp_path / "bad.csv"
    bad.write_text("device,request_id,row,label\nclean-0,no-such-request,0,3\n" + filled.read_text().split("\n", 1)[1])
    refused = cli("label", "import", bad, "--db", url)
    assert refused.exit_code == 1 and "nothing was imported" in refused.output
    for _ in range(2):  # importing twice changes nothing
        done = cli("label", "import", filled, "--db", url, "--json")
        assert done.exit_code == 0 and json.loads(done.output)["imported"] == 200
    from edgekit.collector.db import Database

    with Database(url).read() as tx:
        assert tx.one("SELECT COUNT(*) FROM feedback WHERE store = 'edgekit-labels'")[0] == 200
    second = json.loads(cli("loop", "run", "--config", config, "--once", "--json").output)["run"]
    assert second["run_id"] == first["run_id"] and second["status"] == "released", second["reason"]


def test_no_trigger_no_run_and_the_decision_says_why(world, tmp_path, cli):
    url = _copy_db(world, tmp_path)
    config = _config(tmp_path, url, world["bundle"], world["fleet"], extra="")
    text = config.read_text().replace('alerts = ["data drift", "estimated accuracy dropped", "feedback accuracy dropped"]',
                                      'alerts = ["non-finite outputs"]\nvolume = 100000')
    assert text != config.read_text()
    config.write_text(text)
    result = json.loads(cli("loop", "run", "--config", config, "--once", "--json").output)
    assert result["run"] is None and result["decision"]["trigger"] == "none"
    assert "no alert fires" in result["decision"]["reason"] and "volume trigger at 100000" in result["decision"]["reason"]
    status = cli("loop", "status", "--config", config)
    assert "no run yet" in status.output and "wait" in status.output


def test_bad_configs_and_hooks_fail_with_one_clear_line(world, tmp_path, cli):
    url = _copy_db(world, tmp_path)
    config = _config(tmp_path, url, world["bundle"], world["fleet"])
    config.write_text(config.read_text().replace('strategies = { entropy = 1.0, novelty = 1.0 }', 'strategies = { vibes = 1.0 }'))
    bad = cli("loop", "run", "--config", config, "--once")
    assert bad.exit_code == 1 and "unknown curation strategy 'vibes'" in bad.output
    config = _config(tmp_path, url, world["bundle"], world["fleet"])
    config.write_text(config.read_text().replace("edgekit.zoo.digits:fit", "edgekit.zoo.digits:no_such_hook"))
    failed = cli("loop", "run", "--config", config, "--once", "--now")
    assert failed.exit_code == 1 and "training failed" in failed.output and "train.log" in failed.output
    status = json.loads(cli("loop", "status", "--config", config, "--json").output)
    assert status["run"]["status"] == "failed" and status["run"]["step"] == "dataset"


def test_curation_spreads_its_budget_instead_of_piling_onto_duplicates(tmp_path):
    """A stuck camera's 100 near-identical, very uncertain frames against 200 varied ones: entropy
    alone spends the budget on them; with diversity, a budget of 20 takes at most two. Exact
    copies are never queued twice."""
    from edgekit.loop.config import Curation
    from edgekit.loop.curate import curate

    rng = np.random.default_rng(0)
    varied = rng.normal(0, 2, (200, 10))
    stuck = np.tile(np.full((1, 10), 0.01), (100, 1))
    logits = np.concatenate([varied, stuck]).astype(np.float32)
    n = len(logits)
    inputs = np.concatenate([rng.random((200, 4)), 0.5 + rng.normal(0, 1e-3, (100, 4))]).astype(np.float32)
    np.savez(tmp_path / "pool.npz", input=inputs, **{"outputs/logits": logits},
             labels=np.full(n, -1), labelled=np.zeros(n, bool), request_id=np.array([f"r{i}" for i in range(n)]),
             device=np.array(["d"] * n), row=np.zeros(n, int), time=np.arange(n, dtype=float))
    plain = curate(str(tmp_path / "pool.npz"), Curation(budget=20, diversity=False, strategies={"entropy": 1.0}))
    spread = curate(str(tmp_path / "pool.npz"), Curation(budget=20, diversity=True, oversample=10,
                                                         strategies={"entropy": 1.0}))
    assert (plain.rows >= 200).sum() == 20
    assert (spread.rows >= 200).sum() <= 2 and len(set(spread.rows.tolist())) == 20
    inputs[200:] = 0.5  # exact copies
    np.savez(tmp_path / "copies.npz", **{**dict(np.load(tmp_path / "pool.npz")), "input": inputs})
    once = curate(str(tmp_path / "copies.npz"), Curation(budget=20, diversity=False, strategies={"entropy": 1.0}))
    assert (once.rows >= 200).sum() == 1


def test_loop_state_and_label_import_on_both_databases(db_url, tmp_path):
    """The loop's tables, the lock and the label import on SQLite and PostgreSQL."""
    from edgekit.collector.db import Database, add_device
    from edgekit.errors import EdgekitError
    from edgekit.loop.queue import import_labels
    from edgekit.loop.state import (Run, add_to_queue, create_run, labelled_in_queue, loop_lock, open_run,
                                    queued_keys, record_decision, save_run)

    db = Database(db_url)
    add_device(db, "pi-1")
    with db.connect() as tx:
        for i in range(3):
            tx.execute("INSERT INTO records (device, store, record_id, request_id, time, model, received, rows) "
                       "VALUES ('pi-1', 's', ?, ?, ?, 'm', ?, 1)", (i, f"r{i}", 100.0 + i, 200.0))
    run = Run("run-1", "m", 1.0, 1.0, "trigger", "running", "now", "asked", str(tmp_path), {})
    create_run(db, run)
    record_decision(db, "m", 1.0, True, "now", "asked", {"n": 1}, "run-1")
    add_to_queue(db, "m", "run-1", [("pi-1", "r0", 0), ("pi-1", "r1", 0)], 2.0)
    add_to_queue(db, "m", "run-1", [("pi-1", "r0", 0)], 3.0)  # queued once
    assert queued_keys(db, "m") == {("pi-1", "r0", 0), ("pi-1", "r1", 0)}
    labels = tmp_path / "labels.csv"
    labels.write_text("device,request_id,row,label\npi-1,r0,0,7\npi-1,r1,0,\n")
    assert import_labels(db, labels)["imported"] == 1
    labels.write_text("device,request_id,row,label\npi-1,r0,0,8\n")
    assert import_labels(db, labels)["changed"] == 1  # a correction: the latest label wins
    assert import_labels(db, labels)["changed"] == 0  # the same again adds nothing
    with db.read() as tx:  # the first label stays, so data sets formed before the correction rebuild
        assert tx.all("SELECT label FROM feedback WHERE request_id = 'r0' ORDER BY time") == [("7",), ("8",)]
        tx.execute("UPDATE records SET rows = 3 WHERE request_id = 'r2'")  # a batch prediction
    labels.write_text("device,request_id,row,label\npi-1,r2,0,4\npi-1,r2,2,6\n")
    import_labels(db, labels)  # one label list, a row at a time; row 0 is a row too
    with db.read() as tx:
        assert tx.all("SELECT label FROM feedback WHERE request_id = 'r2'") == [("[4, null, 6]",)]
    labels.write_text("device,request_id,row,label\npi-1,r2,1,5\n")
    import_labels(db, labels)  # another row later: the list keeps the rows given before
    with db.read() as tx:
        assert tx.all("SELECT label FROM feedback WHERE request_id = 'r2' ORDER BY time") == [
            ("[4, null, 6]",), ("[4, 5, 6]",)]
    assert labelled_in_queue(db, "m", "run-1") == (2, 1)
    run.step, run.outputs = "curate", {"curate": {"selected": 2}}
    save_run(db, run)
    assert open_run(db, "m").outputs == {"curate": {"selected": 2}}
    with loop_lock(db, "m"):
        with db.connect() as tx:  # a live holder elsewhere
            tx.execute("UPDATE loop_lock SET owner = 'other-host:1' WHERE model = 'm'")
        with pytest.raises(EdgekitError, match="another loop runs model 'm'"):
            with loop_lock(db, "m"):
                pass


def test_strategies_rules_loss_and_disagreement_pick_what_they_are_named_for(tmp_path):
    from edgekit.loop.config import Curation
    from edgekit.loop.curate import curate

    rng = np.random.default_rng(1)
    n = 100
    logits = rng.normal(0, 3, (n, 4)).astype(np.float32)
    labels = np.full(n, -1)
    labels[:50] = logits[:50].argmin(1)  # labelled and badly wrong: high loss
    labels[:10] = logits[:10].argmax(1)  # labelled and right
    outcome = np.array(["rejected" if i == 77 else "" for i in range(n)])
    np.savez(tmp_path / "pool.npz", input=rng.random((n, 3)).astype(np.float32), **{"outputs/logits": logits},
             labels=labels, labelled=labels >= 0, request_id=np.array([f"r{i}" for i in range(n)]),
             device=np.array(["d"] * n), row=np.zeros(n, int), time=np.arange(n, dtype=float), outcome=outcome)
    (tmp_path / "rules.py").write_text("def rejected(chunk):\n    return chunk['outcome'] == 'rejected'\n")
    ruled = curate(str(tmp_path / "pool.npz"), Curation(budget=3, rules=(f"{tmp_path / 'rules.py'}:rejected",),
                                                        strategies={"entropy": 1.0}, diversity=False))
    assert ruled.rows[0] == 77 and ruled.reasons[0] == "rule"
    assert all(r >= 50 for r in ruled.rows)  # labelled rows are not queued again...
    review = curate(str(tmp_path / "pool.npz"), Curation(budget=5, strategies={"loss": 1.0}, diversity=False))
    assert all(10 <= r < 50 for r in review.rows)  # ...unless their label surprises the model: a review
    # a second model that disagrees only on rows 60-69
    from edgekit.testing.models import Predictor

    pool_inputs = np.load(tmp_path / "pool.npz")["input"]
    other_logits = logits.copy()
    other_logits[60:70] = -other_logits[60:70]
    row_of = {x.tobytes(): i for i, x in enumerate(pool_inputs)}

    class Other(Predictor):  # a model whose answers are known row by row
        def __init__(self):
            self.name, self.input_names = "other", ["input"]

        def outputs(self, data, batch=256):
            return other_logits[[row_of[x.tobytes()] for x in data["input"]]]

    disagree = curate(str(tmp_path / "pool.npz"), Curation(budget=10, strategies={"disagreement": 1.0},
                                                           other="other", diversity=False), other=Other())
    assert set(disagree.rows.tolist()) == set(range(60, 70))


def test_the_training_limit_kills_a_hanging_hook_and_keeps_its_log(world, tmp_path):
    from edgekit.errors import EdgekitError
    from edgekit.loop.train import run_training

    (tmp_path / "hang.py").write_text("import time\n\ndef fit(dataset, current, out):\n    print('starting')\n"
                                      "    time.sleep(600)\n")
    (tmp_path / "data").mkdir()
    with pytest.raises(EdgekitError, match="ran past its limit of 2 s"):
        run_training(f"{tmp_path / 'hang.py'}:fit", tmp_path / "data", str(world["bundle"]), tmp_path / "out", 2.0)
    assert not _trainers(tmp_path)  # killed, not left running
    assert "starting" in (tmp_path / "out" / "train.log").read_text()


def test_the_keep_set_goes_into_every_data_set_and_budgets_hold_runs_back(world, tmp_path, cli):
    url = _copy_db(world, tmp_path)
    config = _config(tmp_path, url, world["bundle"], world["fleet"])
    config.write_text(config.read_text().replace("[trigger]\n", "[trigger]\nmax_runs_per_week = 0\n"))
    keep = tmp_path / "rare.npz"
    np.savez(keep, input=np.zeros((3, 1, 8, 8), np.float32), labels=np.array([1, 2, 3]))
    added = cli("loop", "keep", keep, "--config", config, "--json")
    assert added.exit_code == 0 and json.loads(added.output)[0]["rows"] == 3
    unlabelled = tmp_path / "nolabels.npz"
    np.savez(unlabelled, input=np.zeros((3, 1, 8, 8), np.float32))
    refused = cli("loop", "keep", unlabelled, "--config", config)
    assert refused.exit_code == 1 and "has no labels" in refused.output
    held = json.loads(cli("loop", "run", "--config", config, "--once", "--now", "--json").output)
    assert held["run"] is None and held["decision"]["trigger"] == "budget"  # even ad hoc: 0 runs a week
    from edgekit.loop.config import DatasetSpec
    from edgekit.loop.dataset import form_dataset

    manifest = form_dataset(None, tmp_path / "ds", ["input"], DatasetSpec(history=50),
                            sorted((tmp_path / "work" / "keep").glob("*.npz")), [world["fleet"].base_data])
    assert manifest["splits"]["train"]["sources"] == {"keep": 1, "history": 50}  # 3 identical keep rows: one
    name = json.loads(added.output)[0]["file"]
    assert cli("loop", "keep", "--config", config, "--remove", name).exit_code == 0
    assert json.loads(cli("loop", "keep", "--config", config, "--json").output) == []


def test_a_hook_that_returns_a_broken_model_fails_training_and_a_fixed_one_resumes(world, tmp_path, cli):
    """A hook returned a file that is no model: the train step was recorded done and every later
    pass failed at the gate on that file, however the hook was fixed. Now training fails, says
    why, and the next pass trains again."""
    url = _copy_db(world, tmp_path)
    (tmp_path / "hooks.py").write_text(
        "from pathlib import Path\n"
        "def garbage(dataset, current, out):\n"
        "    path = Path(out) / 'model.onnx'\n"
        "    path.write_bytes(b'not a model')\n"
        "    return path\n")
    config = _config(tmp_path, url, world["bundle"], world["fleet"])
    config.write_text(config.read_text().replace("edgekit.zoo.digits:fit", f"{tmp_path / 'hooks.py'}:garbage"))
    failed = cli("loop", "run", "--config", config, "--once", "--now")
    assert failed.exit_code == 1 and "does not run on the validation data" in failed.output, failed.output
    status = json.loads(cli("loop", "status", "--config", config, "--json").output)
    assert status["run"]["status"] == "failed" and status["run"]["step"] == "dataset"  # train is not done
    config.write_text(config.read_text().replace(f"{tmp_path / 'hooks.py'}:garbage", "edgekit.zoo.digits:fit"))
    fixed = json.loads(cli("loop", "run", "--config", config, "--once", "--json").output)["run"]
    assert fixed["status"] == "released" and fixed["run_id"] == status["run"]["run_id"], fixed["reason"]
