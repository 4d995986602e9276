"""Alert rules on a real collector database (SQLite and PostgreSQL): a rule fires only on a sample
of at least its min_samples, per scope, and stays quiet below it."""

import pytest

from edgekit.collector.db import Database
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
