"""The canary decision: every signal rolls a worse canary back and leaves a better one alone; the
latency signal tells a regression from scheduling jitter; judge() reads what the fleet logged."""

import numpy as np
import pytest

from edgekit.collector.canary import Policy, latency_signal, shadow_verdict, verdict
from tests.conftest import ingest_predictions
from tests.unit.test_runtime import opt_dir  # noqa: F401  (the tiny bundle fixture)

pytest.importorskip("scipy")


def test_jitter_on_a_fast_model_is_not_a_regression():
    """0.09 ms against 0.074 ms is 23% slower and significant on 120 samples, but 0.017 ms is
    noise between two processes on a busy machine: it once rolled a good release back in CI."""
    rng = np.random.default_rng(0)
    control = list(0.074 + rng.normal(0, 0.004, 60))
    canary = list(0.091 + rng.normal(0, 0.004, 120))
    signal = latency_signal(canary, control, Policy())
    assert signal["p"] < 0.01 and signal["canary"] > signal["baseline"] * 1.2
    assert signal["verdict"] == "pass"


def test_a_real_regression_is_worse():
    rng = np.random.default_rng(1)
    control = list(4.0 + rng.normal(0, 0.2, 60))
    canary = list(6.0 + rng.normal(0, 0.2, 120))
    assert latency_signal(canary, control, Policy())["verdict"] == "worse"
    assert latency_signal(canary, control, Policy(latency_floor_ms=3.0))["verdict"] == "pass"
    assert latency_signal(canary[:10], control, Policy()) is None  # too few to judge


# -- every signal, both directions, on the decision itself --------------------------------------

def _side(predictions=400, fallbacks=4, labelled=100, correct=95, latency_ms=4.0, seed=0):
    rng = np.random.default_rng(seed)
    return {"predictions": predictions, "fallbacks": fallbacks, "labelled": labelled, "correct": correct,
            "latency": list(latency_ms + rng.normal(0, 0.1, 200))}


@pytest.mark.parametrize("signal, worse_side", [
    ("fallback share", {"fallbacks": 60}),
    ("feedback error rate", {"correct": 70}),
    ("latency p50 ms", {"latency_ms": 6.0}),
])
def test_each_signal_rolls_back_a_worse_canary_and_only_a_worse_one(signal, worse_side):
    control = _side(seed=1)
    worse = verdict("2", "1", _side(**worse_side), control)
    assert worse.decision == "rollback" and worse.reason.startswith(f"{signal}:")
    assert [s["verdict"] for s in worse.signals if s["signal"] == signal] == ["worse"]
    # the same difference the other way is the canary being better: one-sided tests, no rollback
    better = verdict("2", "1", control, _side(**worse_side))
    assert better.decision == "promote" and all(s["verdict"] == "pass" for s in better.signals)
    assert signal in {s["signal"] for s in better.signals}  # judged, not skipped


def test_a_canary_like_its_baseline_is_promoted_only_with_enough_predictions():
    same = verdict("2", "1", _side(), _side(seed=1))
    assert same.decision == "promote" and {s["signal"] for s in same.signals} == {
        "fallback share", "feedback error rate", "latency p50 ms"}
    short = verdict("2", "1", _side(predictions=150, fallbacks=1), _side(seed=1))
    assert short.decision == "wait" and "promotion needs 200 each" in short.reason
    few_labels = verdict("2", "1", _side(labelled=10, correct=0), _side(seed=1))
    assert "feedback error rate" not in {s["signal"] for s in few_labels.signals}  # 10 labels judge nothing


def test_small_differences_within_the_margin_pass():
    # 3% against 1% fallbacks is significant on 4000 predictions, and within the 2-point margin
    assert verdict("2", "1", _side(predictions=4000, fallbacks=120), _side(predictions=4000, fallbacks=40)
                   ).decision == "promote"


@pytest.mark.parametrize("only_base, only_new, pairs, decision", [
    (30, 2, 400, "rollback"),  # the shadow got 30 labelled requests wrong that the served version got right
    (2, 30, 400, "promote"),  # ...the other way: better
    (3, 1, 400, "promote"),  # 3 against 1 is chance
    (0, 0, 150, "wait"),  # too few pairs to promote
])
def test_shadow_verdict_is_a_paired_test_on_labelled_requests(only_base, only_new, pairs, decision):
    v = shadow_verdict("2", "1", pairs, 12, only_base, only_new)
    assert v.decision == decision, v.reason


# -- judge() on a real collector database: what the fleet's records add up to ---------------------

@pytest.fixture
def registry(opt_dir, tmp_path):  # noqa: F811
    from edgekit.bundle import make_bundle
    from edgekit.collector.db import Database
    from edgekit.collector.releases import publish, set_state, start_rollout

    db = Database(f"sqlite:///{tmp_path / 'collector.db'}")
    for version in ("1", "2"):
        make_bundle(opt_dir, tmp_path / f"tiny-{version}.ekb", version=version)
        publish(db, tmp_path / "store", tmp_path / f"tiny-{version}.ekb", "tiny", version)
    start_rollout(db, "tiny", "1", 100)
    set_state(db, "tiny", "promoted", "the fleet's first version")
    start_rollout(db, "tiny", "2", 100)  # every device may report on 2; judge() compares logged versions
    return db


def test_judge_reads_fallbacks_from_the_fleets_records(registry):
    from edgekit.collector.canary import judge

    ingest_predictions(registry, "control-0", "tiny", "1", 300, fallback_every=100)
    ingest_predictions(registry, "canary-0", "tiny", "2", 300, fallback_every=3)  # a third of the canary's requests fell back
    v = judge(registry, "tiny")
    assert v.decision == "rollback" and v.reason.startswith("fallback share"), v.reason


def test_judge_promotes_a_healthy_canary_and_rolls_back_a_failed_one(registry):
    from edgekit.collector.canary import judge
    from edgekit.collector.releases import report_device

    ingest_predictions(registry, "control-0", "tiny", "1", 300, fallback_every=100)
    ingest_predictions(registry, "canary-0", "tiny", "2", 300, fallback_every=100)
    assert judge(registry, "tiny").decision == "promote"
    report_device(registry, "canary-0", "tiny", "2", "failed", "self-test failed")
    v = judge(registry, "tiny")
    assert v.decision == "rollback" and "failed on 1 device(s): canary-0: self-test failed" in v.reason


def test_a_first_rollout_has_nothing_to_roll_back_to_and_is_paused_instead(opt_dir, tmp_path):  # noqa: F811
    """'release rollback' on a model's first rollout said rolled back while devices stayed on the
    version: it is refused, and a failing first canary is paused, which stops it spreading."""
    from edgekit.bundle import make_bundle
    from edgekit.collector.canary import decide
    from edgekit.collector.db import Database, add_device
    from edgekit.collector.releases import current_rollout, publish, report_device, set_state, start_rollout
    from edgekit.errors import EdgekitError

    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    make_bundle(opt_dir, tmp_path / "tiny-1.ekb", version="1")
    publish(db, tmp_path / "store", tmp_path / "tiny-1.ekb", "tiny", "1")
    start_rollout(db, "tiny", "1", 100)
    with pytest.raises(EdgekitError, match="first rollout: there is no earlier version to roll back to"):
        set_state(db, "tiny", "rolled_back", "by hand")
    add_device(db, "pi-1")
    report_device(db, "pi-1", "tiny", "1", "failed", "self-test failed")
    verdict = decide(db, "tiny")
    assert verdict.decision == "pause" and "no earlier version to roll back to" in verdict.reason
    assert current_rollout(db, "tiny").state == "paused"


@pytest.mark.parametrize("canary", [150, -5, 0])
def test_a_loop_canary_is_a_share_of_devices(tmp_path, canary):
    from edgekit.errors import EdgekitError
    from edgekit.loop.config import LoopConfig

    (tmp_path / "loop.toml").write_text(f'model = "m"\ncurrent = "m.ekb"\ndb = "sqlite:///c.db"\n'
                                        f'train = "x:fit"\ncanary = {canary}\n')
    with pytest.raises(EdgekitError, match="is not a share of devices"):
        LoopConfig.load(tmp_path / "loop.toml")


def test_a_first_release_is_judged_against_the_version_devices_run_and_rolled_back_on_accuracy(opt_dir, tmp_path):  # noqa: F811
    """Devices ran v1 from a file: the first canary waited forever ('no baseline version to compare
    with'), so a bad first release was never rolled back. The field's version is the baseline once
    published (adopted); until then the rollout says how to give it one."""
    from edgekit.bundle import make_bundle
    from edgekit.collector.canary import decide
    from edgekit.collector.db import Database
    from edgekit.collector.releases import adopt, assignment, canary_devices, publish, start_rollout
    from edgekit.errors import EdgekitError

    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    for version in ("1", "2"):
        make_bundle(opt_dir, tmp_path / f"tiny-{version}.ekb", version=version)
    publish(db, tmp_path / "store", tmp_path / "tiny-2.ekb", "tiny", "2")
    devices = [f"pi-{i}" for i in range(6)]
    for d in devices:  # the field runs 1 from a file and is right on every labelled request
        ingest_predictions(db, d, "tiny", "1", 120, labels=[i % 3 for i in range(120)])
    with pytest.raises(EdgekitError, match=r"6 device\(s\) run tiny 1, which is not published"):
        start_rollout(db, "tiny", "2", 50)
    assert adopt(db, tmp_path / "store", tmp_path / "tiny-1.ekb", "tiny")["adopted"]
    rollout = start_rollout(db, "tiny", "2", 50)
    assert rollout.baseline == "1"
    canary, _ = canary_devices(db, "tiny", rollout.canary)
    control = [d for d in devices if d not in canary]
    assert canary and control
    for d in canary:  # the release is wrong on half its labelled requests
        ingest_predictions(db, d, "tiny", "2", 120, start_id=1000, labels=[(i + i % 2) % 3 for i in range(120)])
    for d in control:
        ingest_predictions(db, d, "tiny", "1", 120, start_id=1000, labels=[i % 3 for i in range(120)])
    verdict = decide(db, "tiny")
    assert verdict.decision == "rollback" and verdict.reason.startswith("feedback error rate"), verdict.reason
    assert assignment(db, canary[0], "tiny").version == "1"  # back to what it ran


def test_a_small_fleets_canary_says_how_many_devices_it_holds_and_can_hold_a_minimum(opt_dir, tmp_path):  # noqa: F811
    from edgekit.bundle import make_bundle
    from edgekit.collector.db import Database, add_device
    from edgekit.collector.releases import canary_devices, publish, start_rollout
    from edgekit.errors import EdgekitError

    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    make_bundle(opt_dir, tmp_path / "tiny-1.ekb", version="1")
    publish(db, tmp_path / "store", tmp_path / "tiny-1.ekb", "tiny", "1")
    for i in range(6):
        add_device(db, f"pi-{i}")
    with pytest.raises(EdgekitError, match="leaves no baseline"):
        start_rollout(db, "tiny", "1", 10, min_devices=6)
    rollout = start_rollout(db, "tiny", "1", 1, min_devices=2)
    chosen, eligible = canary_devices(db, "tiny", rollout.canary)
    assert len(chosen) == 2 and eligible == 6 and rollout.canary > 1
