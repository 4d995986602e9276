"""Monitoring on a simulated fleet: the digits model on real device log stores, real sync clients
and a real collector process, SQLite and PostgreSQL.

Four device groups: 'clean' sees held-out digits; 'drifted' sees them rotated, noisy or with
inverted ink; 'camera' has broken cameras (the same constant frame, and no raw inputs kept:
summaries only); 'fallback' runs a bundle whose preferred variant fails on the device. Users
give feedback on half the predictions. Each fault must raise its own signal and alert, and the
clean group none: a false alarm is a defect too.
"""

import http.server
import json
import tarfile
import threading
import urllib.request

import numpy as np
import pytest

from _services import Collector

pytest.importorskip("scipy")
pytestmark = [pytest.mark.integration, pytest.mark.slow]

BROKEN = '''
from edgekit.formats import get
from edgekit.runtime import register_runtime


class BrokenKernel:
    """The real onnxruntime session, failing every call once in service (a kernel this board's
    CPU cannot run)."""
    def __init__(self, path, variant, threads, specs):
        self.inner = get("onnx").open_variant(path, variant, threads, specs)
        self.active_provider = "cpu"
        self.calls = 0

    def run(self, feeds):
        self.calls += 1
        if self.calls > 1:  # the first call is the load-time self-test
            raise RuntimeError("illegal instruction in conv kernel")
        return self.inner.run(feeds)


register_runtime("broken-kernel", BrokenKernel)
'''

GROUPS = {"clean": 3, "drifted": 3, "camera": 2, "fallback": 2}


def _broken_bundle(bundle, folder):
    import importlib
    import sys

    from edgekit.bundle import make_bundle

    (folder / "plugins").mkdir()
    (folder / "plugins" / "broken_kernel_runtime.py").write_text(BROKEN)
    sys.path.insert(0, str(folder / "plugins"))
    importlib.import_module("broken_kernel_runtime")
    unpacked = folder / "unpacked"
    with tarfile.open(bundle) as tar:
        tar.extractall(unpacked, filter="data")
    manifest = json.loads((unpacked / "manifest.json").read_text())
    manifest["variants"][0]["runtime"] = "broken-kernel"
    (unpacked / "manifest.json").write_text(json.dumps(manifest))
    make_bundle(unpacked, folder / "broken.ekb", version="1")
    return folder / "broken.ekb", manifest["model"]["name"]


def _traffic(x, y, rng):
    """(images, labels, sampling, feedback kind) per device."""
    ref_x, ref_y, x, y = x[::2], y[::2], x[1::2], y[1::2]
    noisy = np.clip(x[75:150] + rng.normal(0, 0.35, x[75:150].shape), 0, 1).astype(np.float32)
    return {
        "clean-0": (x[:75], y[:75], "fraction:0.5"), "clean-1": (x[75:150], y[75:150], "fraction:0.5"),
        "clean-2": (x[150:], y[150:], "fraction:0.5"),
        "drifted-0": (np.ascontiguousarray(np.rot90(x[:75], 1, axes=(2, 3))), y[:75], "fraction:0.5"),
        "drifted-1": (noisy, y[75:150], "fraction:0.5"),
        "drifted-2": ((1.0 - x[150:]).astype(np.float32), y[150:], "fraction:0.5"),
        "camera-0": (np.full((75, 1, 8, 8), 0.4, np.float32), None, "none"),
        "camera-1": (np.full((75, 1, 8, 8), 0.4, np.float32), None, "none"),
        "fallback-0": (ref_x[:75], ref_y[:75], "fraction:0.5"), "fallback-1": (ref_x[75:150], ref_y[75:150], "fraction:0.5"),
    }, (ref_x, ref_y)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fleet(request, bundles, tmp_path_factory, make_database):
    from click.testing import CliRunner

    from edgekit.cli import main
    from edgekit.runtime import load
    from edgekit.sync import SyncClient
    from edgekit.sync.store import LogStore, SamplingPolicy
    from edgekit.zoo import digits

    folder = tmp_path_factory.mktemp(f"fleet-{request.param}")
    broken, model = _broken_bundle(bundles[0], folder)
    _, x_test, _, y_test = digits._split()
    rng = np.random.default_rng(0)
    devices, (ref_x, ref_y) = _traffic(x_test, y_test, rng)
    np.savez(folder / "reference.npz", input=ref_x, labels=ref_y)
    runner = CliRunner()
    with make_database(request.param, folder) as url:
        collector = Collector(url).start()
        try:
            for name, (images, labels, sampling) in devices.items():
                group = name.split("-")[0]
                enrolled = runner.invoke(main, ["collector", "add-device", name, "--group", group, "--db", url])
                assert enrolled.exit_code == 0, enrolled.output
                store = LogStore(folder / f"{name}.db", sampling=SamplingPolicy.parse(sampling))
                runtime = load(broken if group == "fallback" else bundles[0], log_store=store)
                for i in range(len(images)):
                    out = runtime.predict({"input": images[i:i + 1]})
                    if i % 2 == 0:  # feedback on half of the predictions
                        if labels is None:
                            runtime.feedback(out.request_id, outcome="rejected")
                        else:
                            runtime.feedback(out.request_id, label=int(labels[i]))
                SyncClient(store, collector.url, enrolled.output.strip()).drain()
                store.close()
            made = runner.invoke(main, ["monitor", "reference", "--data", str(folder / "reference.npz"), "--model",
                                        model, "--predictor", str(bundles[0]), "--db", url, "--json"])
            assert made.exit_code == 0, made.output
            yield {"url": url, "model": model, "folder": folder, "collector": collector, "runner": runner,
                   "reference": json.loads(made.output)}
        finally:
            collector.stop()


def _cli(fleet, *args, db=True):
    from edgekit.cli import main

    return fleet["runner"].invoke(main, [*map(str, args), *(["--db", fleet["url"]] if db else [])])


def test_the_reference_knows_the_task_and_its_accuracy(fleet):
    ref = fleet["reference"]
    assert ref["rows"] == 225 and ref["task"] == "classification" and ref["accuracy"] > 0.9
    assert 0 < ref["low_confidence"] < 1 and ref["expectations"] > 0


def test_each_fault_raises_its_alert_and_the_clean_group_none(fleet):
    result = _cli(fleet, "monitor", "check", "--model", fleet["model"], "--json")
    alerts = json.loads(result.output)["alerts"]
    assert result.exit_code == 1
    by_group: dict = {}
    for a in alerts:
        by_group.setdefault(a["key"].get("group"), set()).add(a["rule"])
    assert "clean" not in by_group, by_group.get("clean")  # no false alarm on healthy devices
    assert {"data drift", "estimated accuracy dropped", "feedback accuracy dropped",
            "predicted classes shifted"} <= by_group["drifted"]
    assert {"repeated inputs", "data quality"} <= by_group["camera"]  # one frozen frame
    assert "fallbacks" in by_group["fallback"]
    assert "data drift" not in by_group["fallback"] and "fallbacks" not in by_group["drifted"]


def test_signals_per_group_show_what_went_wrong(fleet):
    show = _cli(fleet, "monitor", "show", "--model", fleet["model"], "--by", "group", "--json")
    assert show.exit_code == 0, show.output
    scopes = {s["key"]["group"]: s for s in json.loads(show.output)["scopes"]}
    clean, drifted, camera, fallback = (scopes[g]["signals"] for g in ("clean", "drifted", "camera", "fallback"))
    assert clean["records"] == 225 and clean["feedback.labelled"] == 114
    assert clean["feedback.accuracy"] > 0.9 and clean["drift.share"] < 0.5 and clean["proxy.fallback_share"] == 0
    assert drifted["feedback.accuracy"] < 0.6 and drifted["performance.estimated_accuracy"] < clean[
        "performance.estimated_accuracy"] - 0.05
    assert drifted["drift.share"] >= 0.5 and drifted["proxy.low_confidence_share"] > 3 * clean["proxy.low_confidence_share"]
    # one frozen frame: the same input again and again (its identical outputs are no model fault)
    assert camera["proxy.repeated_input_share"] > 0.9 and camera["proxy.identical_output_share"] == 0.0
    assert clean["proxy.repeated_input_share"] < 0.1 and camera["feedback.negative_share"] == 1.0
    assert camera["quality.failing_share"] == 1.0  # from summaries alone: these devices keep no inputs
    assert fallback["proxy.fallback_share"] == 1.0
    reasons = scopes["fallback"]["details"]["fallback_reasons"]
    assert any("illegal instruction" in r for r in reasons) and any("demoted" in r for r in reasons)
    rotated = {f["feature"]: f for f in scopes["drifted"]["details"]["drift"]["features"]}
    assert rotated["out.class"]["drifted"] and rotated["in.input.mean"]["drifted"]


def test_report_is_one_self_contained_page_with_the_alerts_on_top(fleet):
    out = fleet["folder"] / f"report-{fleet['url'][:6]}"
    result = _cli(fleet, "monitor", "report", "--model", fleet["model"], "--window", "1d", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert page.index("alerts firing") < page.index("Health by scope") < page.index("Drift per feature")
    assert "group=drifted" in page and "data:image/png;base64," in page and "<script" not in page
    assert "src=\"http" not in page and "href=\"http" not in page  # nothing fetched from elsewhere
    data = json.loads((out / "report.json").read_text())
    assert {a["key"]["group"] for a in data["alerts"] if "group" in a["key"]} == {"drifted", "camera", "fallback"}
    # the per-device rules name the devices of the broken groups, and no clean one
    named = {a["key"]["device"].split("-")[0] for a in data["alerts"] if "device" in a["key"]}
    assert named and named <= {"camera", "fallback"}, named
    # JSON types, not their repr: "drifted": "False" is true to every reader
    scopes = [data["snapshot"]["total"], *data["snapshot"]["scopes"]]
    verdicts = [f["drifted"] for s in scopes for f in s["details"].get("drift", {}).get("features", [])]
    assert verdicts and all(isinstance(v, bool) for v in verdicts)


def test_collector_metrics_are_prometheus_gauges_per_group(fleet):
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"{fleet['collector'].url}/metrics", timeout=60).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, s.labels.get("group"))] = s.value
    assert samples[("edgekit_monitor_proxy_fallback_share", "fallback")] == 1.0
    assert samples[("edgekit_monitor_proxy_fallback_share", "clean")] == 0.0
    assert samples[("edgekit_monitor_drift_share", "drifted")] >= 0.5
    assert any(name == "edgekit_collector_records_total" for name, _ in samples)
    dashboard = json.loads(_cli(fleet, "monitor", "grafana", db=False).output)
    used = {t["expr"].split("{")[0] for p in dashboard["panels"] for t in p["targets"]}
    assert {n for n in used if n.startswith("edgekit_monitor_")} <= {name for name, _ in samples}


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_check_notifies_once_then_cools_down(fleet, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "fallback share"\nsignal = "proxy.fallback_share"\nabove = 0.2\nmin_samples = 50\n'
                     'by = "group"\nwindow = "1d"\ncooldown = "1h"\nseverity = "warning"\n')
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook"
    _Hook.received.clear()
    try:
        first = _cli(fleet, "monitor", "check", "--model", fleet["model"], "--rules", rules, "--webhook", url)
        second = _cli(fleet, "monitor", "check", "--model", fleet["model"], "--rules", rules, "--webhook", url)
    finally:
        server.shutdown()
    assert first.exit_code == second.exit_code == 1
    assert first.output.count("ALERT") == 1 and "group=fallback" in first.output and "cooling down" not in first.output
    assert "cooling down" in second.output  # still firing, not notified again
    assert len(_Hook.received) == 1 and _Hook.received[0]["alerts"][0]["scope"] == "group=fallback"


def test_parquet_export_is_data_for_pandas_duckdb_and_every_command(fleet, tmp_path):
    import duckdb
    import pandas as pd

    out = tmp_path / "logs"
    result = _cli(fleet, "collector", "export", "--model", fleet["model"], "--format", "parquet", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["inputs"] == ["input"] and list(out.glob(f"model={fleet['model']}/date=*/part-0.parquet"))
    frame = pd.read_parquet(out)
    assert len(frame) == info["rows"] and {"input", "labels", "labelled", "device", "group"} <= set(frame.columns)
    per_group = dict(duckdb.sql(f"SELECT \"group\", count(*) FROM read_parquet('{out}/**/*.parquet', "
                                "hive_partitioning = true) GROUP BY 1").fetchall())
    assert set(per_group) == {"clean", "drifted", "fallback"}  # the cameras kept no inputs
    # the export is a reference (it carries outputs), and with labels only, evaluation data for the card
    again = _cli(fleet, "monitor", "reference", "--data", out / f"model={fleet['model']}", "--model", "from-export")
    assert again.exit_code == 0, again.output
    labelled = tmp_path / "labelled.npz"
    assert _cli(fleet, "collector", "export", "--model", fleet["model"], "--labelled-only", "--out", labelled).exit_code == 0
    card = _cli(fleet, "test", "card", fleet["folder"] / "broken.ekb", "--baseline", fleet["folder"] / "broken.ekb",
                "--data", labelled, "--no-latency", db=False)
    assert card.exit_code == 0, card.output


def test_a_report_never_shows_drift_red_beside_no_alerts_without_saying_why(fleet, tmp_path):
    """Rules judge their own windows: with a rules file that watches only fallbacks, the drifted
    group's dataset drift is shown with the reason no alert fired, and the chart says its scope."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "fallback share"\nsignal = "proxy.fallback_share"\nabove = 0.2\n'
                     'min_samples = 50\nby = "group"\nwindow = "1d"\n')
    out = tmp_path / "report"
    result = _cli(fleet, "monitor", "report", "--model", fleet["model"], "--window", "1d", "--rules", rules,
                  "--out", out)
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert "group=drifted" in page and "dataset drift over this report&#x27;s window; no alert" in page, page[:3000]


def _same(a, b, path="snapshot"):
    """Equal documents: counts and text exactly, floats within 1e-6 (sums run in another order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a, key=str) == sorted(b, key=str), f"{path}: keys {sorted(a, key=str)} vs {sorted(b, key=str)}"
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), f"{path}: {len(a)} items vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and abs(a - b) <= 1e-6 * max(1.0, abs(a)), f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def _lake_numbers(db, model, end):
    from edgekit.monitor.rules import evaluate, load_rules
    from edgekit.monitor.signals import snapshot

    snaps = [snapshot(db, model, end - 86400, end, by=by, now=end).to_dict()
             for by in (("version", "group"), ("device",))]
    return snaps, [a.to_dict() for a in evaluate(db, model, load_rules(None), now=end)]


def test_the_lake_gives_the_databases_monitoring_numbers_with_duckdb_and_spark(fleet, bundles, tmp_path):
    """The telemetry lake, run by run, read by DuckDB and by Spark: every signal of every scope,
    and every alert, as the collector's database gives them (counts exact, floats within 1e-6);
    feedback that arrives after its prediction was exported counts too."""
    import duckdb

    from edgekit.collector.db import Database
    from edgekit.lake.layout import files
    from edgekit.lake.read import LakeDatabase
    from edgekit.lake.write import update
    from edgekit.runtime import load
    from edgekit.sync import SyncClient
    from edgekit.sync.store import LogStore, SamplingPolicy
    from edgekit.zoo import digits

    db, model, lake = Database(fleet["url"]), fleet["model"], tmp_path / "lake"
    first = update(db, lake, settle_s=0)
    with db.read() as tx:
        stored = tx.one("SELECT COUNT(*) FROM records")[0]
    assert first["run"] == 1 and first["records"] == stored and first["feedback"] > 0
    # a device that joins after the first run; its users answer after the second
    enrolled = _cli(fleet, "collector", "add-device", "late-0", "--group", "clean")
    store = LogStore(tmp_path / "late-0.db", sampling=SamplingPolicy.parse("fraction:0.5"))
    runtime = load(bundles[0], log_store=store)
    _, x, _, y = digits._split()
    answered = [runtime.predict({"input": x[i:i + 1]}).request_id for i in range(40)]
    SyncClient(store, fleet["collector"].url, enrolled.output.strip()).drain()
    for i, request_id in enumerate(answered[:30]):  # answered before the second run, received after it
        runtime.feedback(request_id, label=int(y[i]))
    second = update(db, lake, settle_s=0)
    assert second["records"] == 40 and second["feedback"] == 0
    for i in range(40, 60):  # and it goes on predicting: the hour's counts grow between runs
        runtime.predict({"input": x[i:i + 1]})
    SyncClient(store, fleet["collector"].url, enrolled.output.strip()).drain()
    store.close()
    third = update(db, lake, settle_s=0)
    assert third["run"] == 3 and third["records"] == 20 and third["feedback"] == 30
    # a run that died before its state was written leaves files no reader counts
    stray = lake / "records" / "date=2020-01-01" / "part-4.parquet"
    stray.parent.mkdir()
    stray.write_bytes(next((lake / "records").rglob("part-1.parquet")).read_bytes())

    end = third["received_until"]
    expected = _lake_numbers(db, model, end)
    with db.read() as tx:
        sketch_total = tx.one("SELECT SUM(n) FROM sketches")[0]
    counted = duckdb.sql(f"SELECT SUM(n) FROM read_parquet({[str(p) for p in files(lake, 'sketches', 3)]})").fetchall()[0]
    assert counted[0] == sketch_total  # the hourly counts, grown run by run, add up to the database's
    for engine in ("duckdb", "spark"):
        lake_db = LakeDatabase(lake, engine)
        try:
            got = _lake_numbers(lake_db, model, end)
        finally:
            lake_db.close()
        _same(got, expected, engine)
    total = expected[0][0]["total"]["signals"]
    assert total["records"] == stored + 60 and total["feedback.labelled"] > 0
    assert any(a["scope"] == "group=fallback" for a in expected[1])  # numbers worth comparing: faults show
    assert any(c["source"] == "raw inputs" for c in expected[0][0]["total"]["details"]["quality"])
    update(db, lake, settle_s=0)
    assert not stray.exists()  # the next run removes what the dead one left
    _curation_reads_the_lake_as_the_database(db, fleet, lake, end, tmp_path)

    # the same from the command line: the report over the lake, and a folder that is not a lake
    report = _cli(fleet, "monitor", "report", "--model", model, "--lake", lake, "--out", tmp_path / "report", "--json",
                  db=False)
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["records"] == total["records"]
    shown = _cli(fleet, "monitor", "show", "--model", model, "--lake", lake, "--by", "group", db=False)
    assert shown.exit_code == 0 and "group=fallback" in shown.stdout, shown.output
    made = _cli(fleet, "collector", "lake", "--out", tmp_path / "lake2", "--json")
    assert made.exit_code == 0 and json.loads(made.stdout)["run"] == 1, made.output
    refused = _cli(fleet, "collector", "lake", "--out", tmp_path / "report")
    assert refused.exit_code != 0 and "is not a telemetry lake" in refused.output
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [".edgekit-output", "report.html", "report.json"]


def _curation_reads_the_lake_as_the_database(db, fleet, lake, end, tmp_path):
    """The loop's pool from the lake (DuckDB, Spark) holds the database's rows, labels as they
    were at the run's start, and curation picks the same ones; a loop configured with the lake
    queues from it."""
    import pandas as pd

    from edgekit.collector.export import export
    from edgekit.lake.read import LakeDatabase
    from edgekit.loop.config import Curation, LoopConfig
    from edgekit.loop.curate import curate
    from edgekit.loop.runner import Context, step_curate
    from edgekit.loop.state import Run

    model, since = fleet["model"], end - 86400
    pools, picks = {}, {}
    config = Curation(budget=25, strategies={"entropy": 1.0, "margin": 0.5}, diversity=True)
    for engine in ("database", "duckdb", "spark"):
        source = db if engine == "database" else LakeDatabase(lake, engine)
        try:
            export(source, tmp_path / engine, since=str(since), model=model, fmt="parquet", until=end, as_of=end)
        finally:
            if source is not db:
                source.close()
        frame = pd.read_parquet(tmp_path / engine).sort_values(["device", "request_id", "row"]).reset_index(drop=True)
        pools[engine] = frame
        chosen = curate(str(tmp_path / engine), config)
        picks[engine] = (chosen.to_dict(), pd.read_parquet(tmp_path / engine)[["device", "request_id", "row"]]
                         .iloc[chosen.rows].values.tolist())
    assert pools["database"]["labelled"].sum() > 0 and len(picks["database"][1]) == 25
    for engine in ("duckdb", "spark"):
        pd.testing.assert_frame_equal(pools[engine], pools["database"], check_like=True)
        assert picks[engine] == picks["database"]
    loop = LoopConfig(model=model, db=fleet["url"], current=str(fleet["folder"] / "broken.ekb"), train="unused:train",
                      workdir=str(tmp_path / "loop"), curation=Curation(budget=10, strategies={"entropy": 1.0},
                                                                         lake=str(lake)))
    said = []
    run = Run("lake-run", model, end, end, "curate", "running", "test", "the lake", str(tmp_path / "loop" / "lake-run"))
    (tmp_path / "loop" / "lake-run").mkdir(parents=True)
    out = step_curate(Context(loop, db, said.append), run)
    assert out["selected"] == 10 and out["pool"] == len(pools["database"]) and any("from the lake" in s for s in said)
