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
    assert evaluate(db, "tiny", (rule,), record=False) == []  # share 1.0, but too few to say so
    ingest_predictions(db, "pi-1", "tiny", "1", 30, fallback_every=1, start_id=31)
    alerts = evaluate(db, "tiny", (rule,), record=False)
    assert [(a.scope, a.samples, a.value) for a in alerts] == [("device=pi-1", 60, 1.0)]  # pi-2 still has 40
    looser = Rule("fallbacks", "proxy.fallback_share", above=0.2, min_samples=40, by="device", window="1d")
    assert sorted(a.scope for a in evaluate(db, "tiny", (looser,), record=False)) == ["device=pi-1", "device=pi-2"]
