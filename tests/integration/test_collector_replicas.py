"""Collectors that scale out (issue 32): three `edgekit collector serve` replicas behind Debian's
haproxy over one PostgreSQL, eight devices syncing 20,000 records each, and the replica that
holds the canary decision killed with SIGKILL mid-sync. Every record is stored once, each
interval's canary decision is taken by one replica, the promotion happens once; a loop daemon
killed mid-pass hands its model to exactly one successor."""

import json
import math
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import database

from _services import Balancer, Collector, drain_store, fill_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICES, RECORDS = 8, 20_000


def test_three_replicas_behind_haproxy_store_every_record_once_through_a_kill(tmp_path, bundles):
    from edgekit.bundle import make_bundle
    from edgekit.collector.db import Database, add_device
    from edgekit.collector.releases import publish, set_state, start_rollout

    with database("postgresql", tmp_path) as url:
        db = Database(url)
        source = bundles[0].parent / "digits"
        for version in ("1", "2"):
            make_bundle(source, tmp_path / f"digits-{version}.ekb", version=version)
            publish(db, tmp_path / "store", tmp_path / f"digits-{version}.ekb", "digits-cnn", version)
        start_rollout(db, "digits-cnn", "1", 100)
        set_state(db, "digits-cnn", "promoted", "the fleet runs 1")
        start_rollout(db, "digits-cnn", "2", 50)  # judged on the records below: 2 on half the devices
        names = [f"pi-{i}" for i in range(DEVICES)]
        tokens = {name: add_device(db, name) for name in names}
        fillers = [threading.Thread(target=fill_store, args=(tmp_path, n, "2" if i % 2 else "1", RECORDS))
                   for i, n in enumerate(names)]
        for t in fillers:
            t.start()
        for t in fillers:
            t.join()

        replicas = [Collector(url, extra=("--store", str(tmp_path / "store"), "--decide-every", "1s")).start()
                    for _ in range(3)]
        balancer, victim = Balancer([r.port for r in replicas]).start(), None
        try:
            errors = []
            syncs = [threading.Thread(target=drain_store, args=(tmp_path, n, tokens[n], balancer.url, errors)) for n in names]
            for t in syncs:
                t.start()
            while _stored(db) < DEVICES * RECORDS // 3:  # a third in: kill the replica deciding canaries
                time.sleep(0.2)
            decider = _last_decider(db)
            victim = next(r for r in replicas if str(r.proc.pid) == decider.split(":")[-1])
            killed_at = time.time()
            victim.kill()
            for t in syncs:
                t.join(timeout=600)
            assert not errors, errors
            time.sleep(3)  # a few more intervals, decided by the survivors
            # what each survivor says it judged, read around the rows it claimed (its timer goes on)
            survivors = [r for r in replicas if r is not victim]
            before = {str(r.proc.pid): _decided(r.url) for r in survivors}
            with db.read() as tx:
                claimed = dict(tx.all("SELECT replica, COUNT(*) FROM collector_ticks WHERE task = 'canary' "
                                      "GROUP BY replica"))
            after_scrape = {str(r.proc.pid): _decided(r.url) for r in survivors}
        finally:
            balancer.stop()
            for r in replicas:
                if r is not victim:
                    r.stop()

        with db.read() as tx:
            total, distinct = tx.one("SELECT COUNT(*), COUNT(DISTINCT (device, store, record_id)) FROM records")
            per_device = tx.all("SELECT device, COUNT(*), MIN(record_id), MAX(record_id) FROM records GROUP BY device")
            # the hourly sketches, kept on arrival, count each record once: one latency per record
            sketched = tx.one("SELECT SUM(n) FROM sketches WHERE feature = 'sys.latency_ms'")[0]
            ticks = tx.all("SELECT slot, replica, time, detail FROM collector_ticks WHERE task = 'canary' ORDER BY slot")
            promoted = tx.all("SELECT time FROM rollout_events WHERE model = 'digits-cnn' AND version = '2' "
                              "AND event = 'promoted'")
        assert total == distinct == DEVICES * RECORDS
        assert sorted(per_device) == sorted((n, RECORDS, 1, RECORDS) for n in names)
        assert sketched == DEVICES * RECORDS
        slots = [t[0] for t in ticks]
        assert len(slots) == len(set(slots))  # one decision per interval
        after = {t[1] for t in ticks if t[2] > killed_at + 1}
        assert after and decider not in after  # a survivor took the decisions over
        for pid in before:  # each interval a survivor judged is one it claimed: none judged twice
            mine = sum(n for replica, n in claimed.items() if replica.endswith(f":{pid}"))
            assert before[pid] <= mine <= after_scrape[pid], (pid, before[pid], mine, after_scrape[pid])
        decisions = [d["decision"] for t in ticks for d in json.loads(t[3])]
        assert decisions.count("promote") == 1 and len(promoted) == 1, decisions


def _decided(url) -> float:
    """The intervals a replica judged itself, from its /metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith('edgekit_collector_canary_intervals_total{result="decided"}'))


def _stored(db) -> int:
    with db.read() as tx:
        return tx.one("SELECT COUNT(*) FROM records")[0]


def _last_decider(db, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with db.read() as tx:
            row = tx.one("SELECT replica FROM collector_ticks WHERE task = 'canary' ORDER BY slot DESC LIMIT 1")
        if row:
            return row[0]
        time.sleep(0.2)
    raise AssertionError("no replica took a canary decision")


HOLD = """
import sys, time
from edgekit.collector.db import Database
from edgekit.loop.state import loop_lock
try:
    with loop_lock(Database(sys.argv[1]), "digits-cnn"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
except Exception as exc:
    print("refused", exc, flush=True)
"""


def test_a_loop_killed_mid_pass_hands_its_model_to_exactly_one_successor(tmp_path):
    """On PostgreSQL the loop's lock is an advisory lock: a holder killed with SIGKILL frees it at
    once (no lease to wait out), and of two daemons starting together exactly one resumes."""
    from edgekit.collector.db import Database

    with database("postgresql", tmp_path) as url:
        Database(url)

        def start(seconds):
            return subprocess.Popen([sys.executable, "-c", HOLD, url, str(seconds)], stdout=subprocess.PIPE, text=True)

        first = start(120)
        assert first.stdout.readline().strip() == "held"
        blocked = start(0)
        assert blocked.communicate(timeout=60)[0].startswith("refused another loop runs model 'digits-cnn'")
        first.kill()
        first.wait()
        racers = [start(2) for _ in range(2)]
        answers = sorted(r.communicate(timeout=60)[0].split(" ")[0].strip() for r in racers)
        assert answers == ["held", "refused"]


def test_replicas_roll_the_ended_hours_up_and_a_report_reads_them(tmp_path):
    """Two `collector serve --rollup-every 1s` replicas over one PostgreSQL: the hours devices
    logged, which ended, are rolled up (one replica at a time, by advisory lock), every mark is
    cleared, each device hour is one rollup row, and the report read from them equals the one
    read from the records."""
    import urllib.request

    from edgekit.collector.db import Database
    from edgekit.collector.export import stats
    from edgekit.monitor.signals import snapshot
    from tests.conftest import ingest_predictions

    with database("postgresql", tmp_path) as url:
        db = Database(url)
        now = time.time()
        for i in range(4):
            ingest_predictions(db, f"pi-{i}", "tiny", "1", 50, fallback_every=5, time_s=now - (2 + i) * 3600)
        waiting = stats(db)["rollup_backlog"]  # what `collector stats` shows
        assert waiting == {"device_hours": 4, "oldest_hour": int((now - 5 * 3600) // 3600) * 3600}
        replicas = [Collector(url, extra=("--rollup-every", "1s", "--decide-every", "0")).start() for _ in range(2)]
        try:
            deadline = time.time() + 120
            while True:
                with db.read() as tx:
                    left = tx.one("SELECT COUNT(*) FROM rollup_dirty")[0]
                if left == 0 or time.time() > deadline:
                    break
                time.sleep(0.5)
            text = urllib.request.urlopen(f"{replicas[1].url}/metrics", timeout=60).read().decode()
            assert "edgekit_collector_rollup_pending_device_hours 0.0" in text
            assert "edgekit_collector_rollup_oldest_pending_age_seconds 0.0" in text
        finally:
            for r in replicas:
                r.stop()
        assert left == 0, "the replicas did not roll the hours up within 2 minutes"
        with db.read() as tx:
            assert tx.all("SELECT COUNT(*), SUM(records), SUM(fallbacks) FROM record_hours") == [(4, 200, 40)]
        raw = Database(url)
        raw.rollups = False
        window = (now - 6 * 3600, now)
        rolled, truth = (snapshot(d, "tiny", *window, by=("device",), now=now) for d in (db, raw))
        assert [s.signals["records"] for s in rolled.scopes] == [50] * 4
        for got, expected in zip([rolled.total, *rolled.scopes], [truth.total, *truth.scopes]):
            assert got.signals.keys() == expected.signals.keys()
            for key, value in expected.signals.items():  # floats: the database sums in its own order
                same = (math.isclose(got.signals[key], value, rel_tol=1e-9) if isinstance(value, float)
                        else got.signals[key] == value)
                assert same, (got.name, key, got.signals[key], value)
