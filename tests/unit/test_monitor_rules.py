"""Alert rules on a real collector database (SQLite and PostgreSQL): a rule fires only on a sample
of at least its min_samples, per scope, and stays quiet below it."""

import pytest

from edgekit.collector.db import Database
from edgekit.errors import EdgekitError
from edgekit.monitor.rules import Rule, evaluate
from tests.conftest import ingest_predictions

pytest.importorskip("scipy")


def test_a_rule_waits_for_its_minimum_sample_in_each_scope(db_url):
    db = Database(db_url)
    rule = Rule("fallbacks", "proxy.fallback_share", above=0.2, min_samples=50, by="device", window="1d")
    ingest_predictions(db, "pi-1", "tiny", "1", 30, fallback_every=1)  # every request fell back, 30 of them
    ingest_predictions(db, "pi-2", "tiny", "1", 40, fallback_every=1)
    assert evaluate(db, "tiny", (rule,)) == []  # share 1.0, but too few to say so
    ingest_predictions(db, "pi-1", "tiny", "1", 30, fallback_every=1, start_id=31)
    alerts = evaluate(db, "tiny", (rule,))
    assert [(a.scope, a.samples, a.value) for a in alerts] == [("device=pi-1", 60, 1.0)]  # pi-2 still has 40
    looser = Rule("fallbacks", "proxy.fallback_share", above=0.2, min_samples=40, by="device", window="1d")
    assert sorted(a.scope for a in evaluate(db, "tiny", (looser,))) == ["device=pi-1", "device=pi-2"]


RULES = ('[[rule]]\nname = "fallbacks"\nsignal = "proxy.fallback_share"\nabove = 0.2\nmin_samples = 10\n'
         'by = "device"\nwindow = "1d"\ncooldown = "1h"\n')


@pytest.mark.parametrize("url", ["file:///etc/passwd", "not a url", "ftp://example.org/x", "http://"])
def test_a_webhook_is_an_http_url(tmp_path, cli, url):
    (tmp_path / "rules.toml").write_text(RULES)
    result = cli("monitor", "check", "--model", "tiny", "--rules", tmp_path / "rules.toml", "--webhook", url,
                 "--db", f"sqlite:///{tmp_path / 'c.db'}")
    assert result.exit_code == 1 and "is not an http(s) URL" in result.output, result.output


def test_only_a_delivered_alert_cools_down(tmp_path, cli):
    """The receiver is down at the first check: the alert is printed, the delivery fails (exit 1
    with the reason), and the next check notifies it again instead of calling it cooling down."""
    import http.server
    import json
    import threading

    from tests.integration._services import free_port

    url = f"sqlite:///{tmp_path / 'c.db'}"
    ingest_predictions(Database(url), "pi-1", "tiny", "1", 20, fallback_every=1)
    (tmp_path / "rules.toml").write_text(RULES)
    port = free_port()
    hook = f"http://127.0.0.1:{port}/hook"

    def check():
        return cli("monitor", "check", "--model", "tiny", "--rules", tmp_path / "rules.toml", "--webhook", hook,
                   "--db", url)

    down = check()
    assert down.exit_code == 1 and "the webhook" in down.output and "failed" in down.output, down.output
    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", port), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        up = check()
        again = check()
    finally:
        server.shutdown()
    assert "cooling down" not in up.output and len(received) == 1  # delivered now
    assert "cooling down" in again.output and len(received) == 1  # and only now the cool-down runs


def test_collector_metrics_are_bounded_whatever_versions_devices_send(tmp_path):
    """One device posting thousands of version strings grew /metrics to 63,083 series: versions
    get series up to a bound (published ones first), and the rest are counted, not listed."""
    from prometheus_client import CollectorRegistry, generate_latest

    from edgekit.monitor.metrics import MAX_VERSIONS, SignalCollector

    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    for i in range(30):
        ingest_predictions(db, "pi-1", "tiny", f"junk-{i}", 2 + i, start_id=1000 * i + 1)
    registry = CollectorRegistry()
    registry.register(SignalCollector(db))
    text = generate_latest(registry).decode()
    versions = {part.split('"')[1] for line in text.splitlines() if line.startswith("edgekit_monitor_records{")
                for part in line.split(",") if part.startswith("version=")}
    assert len(versions) == MAX_VERSIONS and "junk-29" in versions  # the busiest ones
    assert 'edgekit_monitor_versions_not_shown{model="tiny"} 20.0' in text


@pytest.mark.parametrize("command", [("monitor", "show", "--model", "tiny"), ("monitor", "check", "--model", "tiny"),
                                     ("collector", "stats"), ("release", "status", "tiny")])
def test_a_mistyped_database_path_is_an_error_not_an_empty_database(tmp_path, cli, command):
    typo = tmp_path / "colector.db"
    result = cli(*command, "--db", f"sqlite:///{typo}")
    assert result.exit_code == 1 and "there is no database at" in result.output, result.output
    assert not typo.exists()



def test_one_catalog_names_every_signal_for_rules_metrics_and_the_dashboard():
    """Signal names were plain strings in six files (the rules' list, /metrics' list, a hand-written
    grafana.json...): now one catalog, and what reads it cannot drift apart."""
    from edgekit.monitor.catalog import CATALOG, dashboard, exported
    from edgekit.monitor.metrics import EXPORTED
    from edgekit.monitor.rules import SIGNALS

    assert SIGNALS == set(CATALOG) and set(EXPORTED) == {s.name for s in exported()}
    assert all(s.meaning and s.name.split(".")[0] in ("records", "rows", "feedback", "performance", "proxy",
                                                      "quality", "drift", "system") for s in CATALOG.values())
    panels = [s for s in CATALOG.values() if s.panel]
    assert panels and all(s.exported for s in panels)  # a panel over a series /metrics never serves is empty
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]
    assert {e.split("{")[0] for e in exprs if e.startswith("edgekit_monitor_")} == {s.metric for s in panels}
    assert len({p["id"] for p in dashboard()["panels"]}) == len(panels) + 1  # and the collector's batches

def test_rules_read_only_signals_that_exist(tmp_path):
    """A rule on 'nope.nope' loaded and never fired; the list rules check against is what a
    snapshot really computes."""
    import time

    from edgekit.errors import EdgekitError
    from edgekit.monitor.rules import SIGNALS
    from edgekit.monitor.signals import snapshot

    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    ingest_predictions(db, "pi-1", "tiny", "1", 20)
    assert set(snapshot(db, "tiny", time.time() - 3600, time.time() + 1).total.signals) == SIGNALS
    with pytest.raises(EdgekitError, match="unknown signal 'proxy.fallback_shar'.*did you mean proxy.fallback_share"):
        Rule("typo", "proxy.fallback_shar", above=0.2)
    with pytest.raises(EdgekitError, match="unknown signal 'nope.nope'"):
        Rule("nope", "nope.nope", above=1)


def test_one_faulty_device_among_many_is_named_by_the_default_rules(db_url):
    """One device of six falls back on every call: 1/6 of its group, under the group rule's 0.2,
    so only a device-scope rule sees it, and it says which device."""
    from edgekit.monitor.rules import DEFAULT_RULES

    db = Database(db_url)
    for i in range(6):
        ingest_predictions(db, f"cam-{i}", "tiny", "1", 100, fallback_every=1 if i == 3 else 0)
    # (these synthetic outputs cycle through three values, which the identical-output rules see too)
    alerts = [a for a in evaluate(db, "tiny", DEFAULT_RULES) if a.signal == "proxy.fallback_share"]
    assert [(a.rule, a.scope, a.value) for a in alerts] == [("fallbacks on one device", "device=cam-3", 1.0)]


DAY = 86400.0


def test_labels_that_arrive_36_hours_late_are_counted_at_their_predictions_time(db_url):
    """Every prediction is wrong, and its label arrives 36 h later. A 1-day window holds no label
    yet; the window reaches back to the predictions whose labels are in, and says how far. A past
    window counts only the labels given before it ended."""
    import time

    from edgekit.monitor.signals import snapshot

    db = Database(db_url)
    now = time.time()
    for day in range(4):  # predictions 3.8, 2.8, 1.8 and 0.8 days ago; labels 2.3, 1.3, 0.3 days ago
        t = now - (3.8 - day) * DAY
        ingest_predictions(db, "lab-1", "tiny", "1", 40, time_s=t, start_id=1 + 40 * day,
                           labels=[(i + 1) % 3 for i in range(40)], label_delay_s=1.5 * DAY)
    # and the labels of the predictions of 0.8 days ago come 0.7 days from now
    rule = Rule("wrong", "feedback.accuracy", below=0.5, min_samples=30, by="device", window="1d")
    alerts = evaluate(db, "tiny", (rule,), now=now)
    assert [(a.scope, a.value) for a in alerts] == [("device=lab-1", 0.0)], alerts
    s = snapshot(db, "tiny", now - DAY, now, by=("device",), now=now).scopes[0].signals
    assert s["feedback.coverage"] == 0.0 and s["feedback.labelled"] == 40 and s["feedback.window_s"] == 2 * DAY
    assert s["feedback.lag_p90_s"] == 2 * DAY and abs(s["feedback.lag_mean_s"] - 1.5 * DAY) < 1
    # 3 to 2 days ago: that day's labels came 1.5 days later, after the window ended, so it is
    # judged on the day before's, which came in time
    past = snapshot(db, "tiny", now - 3 * DAY, now - 2 * DAY, by=("device",), now=now).scopes[0].signals
    assert past["records"] == 40 and past["feedback.coverage"] == 0.0, past["feedback.coverage"]
    assert past["feedback.labelled"] == 40 and past["feedback.window_s"] == 2 * DAY


def test_a_device_whose_latency_rose_is_named_against_its_own_past(db_url):
    """Devices differ (a Pi 4 is slower than a Pi 5), so each is compared with its own week before."""
    import time

    from edgekit.monitor.rules import DEFAULT_RULES

    db = Database(db_url)
    now = time.time()
    for i, base in enumerate((0.2, 0.2, 0.6, 0.2, 0.2)):  # cam-2 is a slower board
        ingest_predictions(db, f"cam-{i}", "tiny", "1", 100, latency_ms=base, time_s=now - 3 * DAY)
        ingest_predictions(db, f"cam-{i}", "tiny", "1", 100, latency_ms=0.5 if i == 4 else base,
                           time_s=now - 3600, start_id=101)
    alerts = [a for a in evaluate(db, "tiny", DEFAULT_RULES, now=now) if a.signal.startswith("system.latency")]
    assert [(a.rule, a.scope) for a in alerts] == [("latency rose on one device", "device=cam-4")], alerts
    assert 2.2 < alerts[0].value < 2.8


def test_k_of_n_devices_alerts_once_per_group_and_names_the_devices(db_url):
    db = Database(db_url)
    for group, faulty in (("site-a", {"a-0"}), ("site-b", {"b-1", "b-3"})):
        for i in range(4):
            name = f"{group[-1]}-{i}"
            ingest_predictions(db, name, "tiny", "1", 60, fallback_every=1 if name in faulty else 0, group=group)
    rule = Rule("fallbacks on several devices", "proxy.fallback_share", above=0.5, min_samples=50, by="device",
                min_devices=2)
    alerts = evaluate(db, "tiny", (rule,))
    assert [(a.scope, a.devices) for a in alerts] == [("group=site-b", (("b-1", 1.0), ("b-3", 1.0)))], alerts
    assert "on 2 devices: b-1 (1), b-3 (1)" in alerts[0].line() and "of 4 devices" in alerts[0].threshold
    with pytest.raises(EdgekitError, match='min_devices = 2 needs by = "device"'):
        Rule("bad", "proxy.fallback_share", above=0.5, by="group", min_devices=2)


def test_json_output_holds_json_types_not_their_repr():
    """A numpy bool through json.dumps(default=str) became the string "False": true to every reader."""
    import json

    import numpy as np

    from edgekit._io import to_json

    data = {"drifted": np.bool_(False), "n": np.int64(3), "x": np.float32(0.5), "nan": float("nan"),
            "a": np.arange(2), "t": (1, 2)}
    assert json.loads(to_json(data)) == {"drifted": False, "n": 3, "x": 0.5, "nan": None, "a": [0, 1], "t": [1, 2]}
    with pytest.raises(TypeError, match="object is not JSON data"):
        to_json({"x": object()})


def test_identical_outputs_count_for_different_inputs_only(db_url):
    """A kiosk resends its three pictures all day: three outputs for three inputs is a healthy
    model (the share read 16.8% on a clean site, and 97% here); a stuck camera answers one thing
    to many pictures. The inputs' hash comes with the record (shipped inputs) or in its summary
    (inputs that stay on the device), and both hash alike."""
    import time

    import numpy as np

    from edgekit.collector.ingest import ingest
    from edgekit.features import input_hash, summarise
    from edgekit.collector.db import add_device
    from edgekit.monitor.signals import snapshot
    from edgekit.sync.record import Batch, encode_array

    db = Database(db_url)
    now = time.time()
    for device, stuck in (("kiosk", False), ("stuck-cam", True)):
        add_device(db, device)
        records = []
        for i in range(120):
            x = np.full((1, 4), i % 3 if not stuck else i, np.float32)
            y = np.eye(3, dtype=np.float32)[0 if stuck else i % 3][None]
            record = {"id": i + 1, "request_id": f"{device}-{i}", "time": now, "model": "tiny", "version": "1",
                      "latency_ms": 1.0, "outputs": {"y": encode_array(y)}, "fallbacks": []}
            if i % 2:  # half ship their inputs, half only the summary: the hashes must agree
                record["inputs"] = {"x": encode_array(x)}
            else:
                record["summary"] = summarise({"x": x})
            records.append(record)
        ingest(db, device, f"{device}-1", Batch.dumps(f"store-{device}", records, []))
    assert summarise({"x": np.zeros((1, 4), np.float32)})["__record__"]["hash"] == input_hash({"x": np.zeros((1, 4), np.float32)})
    scopes = snapshot(db, "tiny", now - 3600, now + 1, by=("device",)).scopes
    share = {s.name: s.signals["proxy.identical_output_share"] for s in scopes}
    assert share["device=kiosk"] == 0.0 and share["device=stuck-cam"] > 0.95, share
    repeated = {s.name: s.signals["proxy.repeated_input_share"] for s in scopes}  # what a frozen camera shows
    assert repeated["device=kiosk"] > 0.95 and repeated["device=stuck-cam"] == 0.0, repeated


def test_a_weeks_series_keeps_48_points_and_the_window_adds_up_the_same(db_url):
    """A week's series is drawn in steps of whole hours (at most 48 points per scope, not 168 hourly
    drift tests: most of a week's report went there); each step holds its hours' rows, and every
    signal of the window is the same with the series, without it (one bucket for the window) and
    over an hourly series of a day."""
    from edgekit.monitor.signals import SERIES_POINTS, series_step, snapshot

    db = Database(db_url)
    end = (int(1.8e9) // 3600) * 3600 + 1800.0
    for i, hours_ago in enumerate((1, 5, 30, 70, 120, 160)):
        ingest_predictions(db, f"pi-{i % 2}", "tiny", "1", 20 + i, start_id=1000 * i + 1, time_s=end - hours_ago * 3600,
                           latency_ms=3.0 + i, labels=[i % 3] * (20 + i))
    week = snapshot(db, "tiny", end - 7 * 86400, end, by=("device",), now=end)
    step = series_step(end - 7 * 86400, end)
    assert step == 4 * 3600
    for points in week.series["records"].values():
        assert len(points) <= SERIES_POINTS
        assert all((t - points[0][0]) % step == 0 for t, _ in points)
    assert sum(n for points in week.series["records"].values() for _, n in points) == sum(20 + i for i in range(6))
    flat = snapshot(db, "tiny", end - 7 * 86400, end, by=("device",), now=end, series=False)
    assert flat.total.signals == week.total.signals
    assert [s.signals for s in flat.scopes] == [s.signals for s in week.scopes]
    day = snapshot(db, "tiny", end - 86400, end, by=("device",), now=end)
    assert series_step(end - 86400, end) == 3600 and day.total.signals["records"] == 20 + 21
    assert sorted(t for points in day.series["records"].values() for t, _ in points) == \
        [(int(end) // 3600 - 5) * 3600, (int(end) // 3600 - 1) * 3600]
