"""The device log store: sampling, the disk cap and its exact drop count, corruption recovery."""

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.sync.store import LogStore, SamplingPolicy, decode_array

X = {"input": np.arange(16, dtype=np.float32).reshape(1, 16)}
CONFIDENT = {"logits": np.array([[10.0, 0.0, 0.0]], np.float32)}
UNSURE = {"logits": np.array([[0.1, 0.0, 0.0]], np.float32)}


def test_append_read_ship(tmp_path):
    store = LogStore(tmp_path / "log.db")
    rid = store.append(X, CONFIDENT, "m", version="1", variant="onnx-fp32", latency_ms=1.5)
    records, feedback = store.next_batch(10)
    assert len(records) == 1 and records[0]["request_id"] == rid and feedback == []
    assert np.array_equal(decode_array(records[0]["inputs"]["input"]), X["input"])
    store.feedback(rid, label=2, outcome="corrected")
    records, feedback = store.next_batch(10)
    assert feedback[0]["label"] == 2 and feedback[0]["request_id"] == rid
    store.mark_shipped([r["id"] for r in records], [f["id"] for f in feedback])
    assert store.next_batch(10) == ([], [])
    assert store.stats()["shipped"] == 1 and store.prune_shipped() == 1


def test_wal_mode_and_durability_settings(tmp_path):
    store = LogStore(tmp_path / "log.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("policy, outputs, keeps", [
    ("all", CONFIDENT, True), ("none", CONFIDENT, False),
    ("low_confidence:0.6", CONFIDENT, False), ("low_confidence:0.6", UNSURE, True),
    # a bundle that outputs probabilities: 0.9 is confident (softmax over them read it as 0.69)
    ("low_confidence:0.8", {"probs": np.array([[0.9, 0.1]], np.float32)}, False),
])
def test_sampling_policies(tmp_path, policy, outputs, keeps):
    store = LogStore(tmp_path / "log.db", sampling=policy)
    store.append(X, outputs, "m")
    record = store.next_batch(1)[0][0]
    assert (record["inputs"] is not None) == keeps
    if not keeps:
        assert record["summary"]["input"]["mean"] == pytest.approx(7.5)  # summaries only


def test_fraction_sampling_is_a_fraction(tmp_path):
    store = LogStore(tmp_path / "log.db", sampling="fraction:0.25", seed=0)
    for _ in range(400):
        store.append(X, CONFIDENT, "m")
    kept = sum(r["inputs"] is not None for r in store.next_batch(400)[0])
    assert 70 <= kept <= 130


def test_feedback_policy_keeps_inputs_only_with_feedback(tmp_path, monkeypatch):
    import edgekit.sync.store as store_module

    now = [1_000_000.0]  # the store's clock, moved by hand: no sleeping, no race with the window
    monkeypatch.setattr(store_module.time, "time", lambda: now[0])
    store = LogStore(tmp_path / "log.db", sampling=SamplingPolicy("feedback", feedback_window_s=60))
    a = store.append(X, CONFIDENT, "m")
    store.append(X, CONFIDENT, "m")
    assert store.next_batch(10)[0] == []  # held while feedback may still come
    store.feedback(a, label=1)
    now[0] += 59
    assert [r["request_id"] for r in store.next_batch(10)[0]] == [a]  # released by its feedback
    now[0] += 2
    records = {r["request_id"]: r for r in store.next_batch(10)[0]}
    assert records[a]["inputs"] is not None
    assert [r["inputs"] for rid, r in records.items() if rid != a] == [None]


def test_disk_cap_drops_oldest_and_counts_exactly(tmp_path):
    store = LogStore(tmp_path / "log.db", max_bytes=20_000)
    ids = [store.append(X, CONFIDENT, "m") for _ in range(100)]
    stats = store.stats()
    assert stats["used_bytes"] <= 20_000
    remaining = [r["request_id"] for r in store.next_batch(1000)[0]]
    assert remaining == ids[-len(remaining):]  # the newest survive
    assert stats["dropped"] == 100 - len(remaining)  # every drop counted, none silent
    reopened = LogStore(tmp_path / "log.db", max_bytes=20_000)
    assert reopened.dropped == stats["dropped"] and reopened.used_bytes == stats["used_bytes"]


def test_disk_cap_refuse_policy(tmp_path):
    store = LogStore(tmp_path / "log.db", max_bytes=5_000, when_full="refuse")
    results = [store.append(X, CONFIDENT, "m") for _ in range(50)]
    accepted = [r for r in results if r]
    assert results[-1] is None and store.dropped == 50 - len(accepted)
    assert len(store.next_batch(100)[0]) == len(accepted)


def test_corrupt_database_is_moved_aside(tmp_path):
    path = tmp_path / "log.db"
    path.write_bytes(b"this is not sqlite" * 100)
    store = LogStore(path)
    assert store.append(X, CONFIDENT, "m")
    assert store.stats()["recovered_from"].startswith(str(path) + ".corrupt-")
    assert list(tmp_path.glob("log.db.corrupt-*"))


def test_bad_options():
    with pytest.raises(EdgekitError, match="bad sampling policy"):
        SamplingPolicy.parse("sometimes")
    with pytest.raises(EdgekitError, match="unknown when_full"):
        LogStore("/tmp/x.db", when_full="panic")


def test_runtime_logs_predictions_and_feedback(tmp_path):
    import json
    import shutil

    from edgekit.bundle import sha256_file
    from edgekit.runtime import load
    from tests.conftest import make_tiny_onnx

    out = tmp_path / "b"
    (out / "artifacts").mkdir(parents=True)
    make_tiny_onnx(out / "artifacts" / "a.onnx")
    (out / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "model": {"name": "tiny", "version": "3"}, "target": "host",
        "inputs": [{"name": "x", "shape": ["batch", 4], "dtype": "float32"}],
        "outputs": [{"name": "y", "shape": ["batch", 3], "dtype": "float32"}],
        "variants": [{"id": "a", "file": "artifacts/a.onnx", "format": "onnx", "precision": "fp32",
                      "sha256": sha256_file(out / "artifacts" / "a.onnx"), "runtime": "onnxruntime", "provider": "cpu"}]}))
    store = LogStore(tmp_path / "log.db")
    model = load(out, log_store=store)
    result = model.predict({"x": np.ones((1, 4), np.float32)})
    assert result.request_id and result["y"].shape == (1, 3)
    model.feedback(result.request_id, label=1, outcome="accepted")
    records, feedback = store.next_batch(10)
    assert records[0]["model"] == "tiny" and records[0]["version"] == "3" and records[0]["variant"] == "a"
    assert feedback[0]["request_id"] == result.request_id
    shutil.rmtree(out)


# --- defects from the outside probe (issue 10) -----------------------------------------------

def test_store_has_a_stable_id_and_a_recovered_store_a_new_one(tmp_path):
    path = tmp_path / "log.db"
    store = LogStore(path)
    first = store.store_id
    store.close()
    again = LogStore(path)
    assert again.store_id == first and len(first) == 32
    again.close()
    path.write_bytes(b"garbage" * 1000)  # corruption: moved aside, a new store begins
    assert LogStore(path).store_id != first


def test_a_locked_database_is_not_mistaken_for_corruption(tmp_path):
    import sqlite3

    path = tmp_path / "log.db"
    store = LogStore(path)
    store.append(X, CONFIDENT, "m")
    store.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=DELETE")  # leave WAL so that opening needs an exclusive lock
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(EdgekitError, match="cannot be opened: database is locked.*nothing was moved"):
            LogStore(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not list(tmp_path.glob("log.db.corrupt-*"))
    assert len(LogStore(path).next_batch(10)[0]) == 1  # the unshipped row is still there


@pytest.mark.parametrize("request_id, outcome, message", [
    ("r1", {"a": 1}, "outcome must be a string"),
    (None, "ok", "needs the request_id of a logged prediction"),
])
def test_bad_feedback_leaves_no_transaction_open(tmp_path, request_id, outcome, message):
    store = LogStore(tmp_path / "log.db")
    rid = store.append(X, CONFIDENT, "m")
    with pytest.raises(EdgekitError, match=message):
        store.feedback(request_id, label=1, outcome=outcome)
    later = [store.append(X, CONFIDENT, "m") for _ in range(20)]
    store.feedback(rid, label=3)
    store.flush()
    records, feedback = store.next_batch(100)
    assert [r["request_id"] for r in records] == [rid] + later and feedback[0]["label"] == 3


def test_a_repeated_request_id_is_refused_alone(tmp_path):
    store = LogStore(tmp_path / "log.db", flush_ms=10_000)  # everything stays in one buffered group
    ids = [store.append(X, CONFIDENT, "m") for _ in range(100)]
    ids.append(store.append(X, CONFIDENT, "m", request_id="same"))
    with pytest.raises(EdgekitError, match="'same' was already logged"):
        store.append(X, CONFIDENT, "m", request_id="same")
    store.flush()
    assert [r["request_id"] for r in store.next_batch(1000)[0]] == ids  # 101 of 101 kept
    with pytest.raises(EdgekitError, match="already logged"):
        store.append(X, CONFIDENT, "m", request_id="same")  # also once it is on disk


def test_a_failing_flush_keeps_the_records_and_says_so(tmp_path):
    store = LogStore(tmp_path / "log.db", flush_ms=10_000)
    ids = [store.append(X, CONFIDENT, "m") for _ in range(10)]
    blocker = store.db  # the disk refuses writes for a while
    import sqlite3

    lock = sqlite3.connect(tmp_path / "log.db", isolation_level=None, timeout=0)
    lock.execute("BEGIN IMMEDIATE")
    blocker.execute("PRAGMA busy_timeout=50")
    with pytest.raises(EdgekitError, match="could not commit 10 records.*kept in memory"):
        store.flush()
    stats = store.stats()
    assert stats["flush_errors"] >= 1 and "locked" in stats["last_error"] and stats["unflushed"] == 10
    lock.execute("ROLLBACK")
    store.flush()
    assert [r["request_id"] for r in store.next_batch(100)[0]] == ids and store.stats()["unflushed"] == 0


def test_refuse_policy_recovers_once_rows_are_shipped(tmp_path):
    store = LogStore(tmp_path / "log.db", max_bytes=5_000, when_full="refuse")
    while store.append(X, CONFIDENT, "m"):
        pass
    assert store.append(X, CONFIDENT, "m") is None  # full
    records, _ = store.next_batch(1000)
    store.mark_shipped([r["id"] for r in records], [])
    assert store.append(X, CONFIDENT, "m") is not None  # shipped rows are reclaimed
    assert store.stats()["used_bytes"] <= 5_000


def test_drop_oldest_reclaims_shipped_rows_before_dropping_unshipped(tmp_path):
    store = LogStore(tmp_path / "log.db", max_bytes=20_000)
    while store.used_bytes < 18_000:
        store.append(X, CONFIDENT, "m")
    records, _ = store.next_batch(1000)
    store.mark_shipped([r["id"] for r in records[10:]], [])  # the newer rows shipped, the oldest did not
    for _ in range(len(records) // 2):  # beyond the cap: room must be made
        store.append(X, CONFIDENT, "m")
    assert store.dropped == 0  # room came from shipped rows only
    assert [r["id"] for r in store.next_batch(1000)[0]][:10] == [r["id"] for r in records[:10]]


def test_dead_letter_is_counted_and_kept(tmp_path):
    store = LogStore(tmp_path / "log.db")
    store.append(X, CONFIDENT, "m")
    store.append(X, CONFIDENT, "m")
    records, _ = store.next_batch(10)
    store.dead_letter("record", records[0], "collector answered 413: too large")
    assert [r["request_id"] for r in store.next_batch(10)[0]] == [records[1]["request_id"]]
    assert store.stats()["dead_letter"] == 1
    body = store.db.execute("SELECT reason, body FROM dead_letter").fetchone()
    assert "413" in body[0] and records[0]["request_id"] in body[1]


@pytest.mark.parametrize("kwargs, message", [
    ({"max_bytes": 0}, "max_bytes must be an integer of at least 4096"),
    ({"max_bytes": -1}, "max_bytes must be an integer"),
    ({"sampling": "fraction:5"}, "outside \\[0, 1\\]"),
    ({"sampling": "all:3"}, "bad sampling policy"),
])
def test_nonsense_options_are_refused(tmp_path, kwargs, message):
    with pytest.raises(EdgekitError, match=message):
        LogStore(tmp_path / "log.db", **kwargs)


def test_db_that_is_a_directory(tmp_path):
    with pytest.raises(EdgekitError, match="is a directory"):
        LogStore(tmp_path)


def test_nan_inputs_summarise_to_null_not_to_invalid_json(tmp_path):
    import json

    store = LogStore(tmp_path / "log.db", sampling="none")
    store.append({"input": np.full((1, 4), np.nan, np.float32)}, CONFIDENT, "m")
    record = store.next_batch(1)[0][0]
    assert record["summary"]["input"]["mean"] is None
    json.dumps(record, allow_nan=False)  # what the client sends must be strict JSON


@pytest.mark.parametrize("line, message", [
    ('batch_size = "ten"', "batch_size: expected an integer, got 'ten'"),
    ("batch_size = 0", "batch_size must be at least 1"),
    ("max_bytes = -1", "max_bytes must be at least 4096"),
    ("poll_s = nan", "poll_s: expected a finite number"),
    ("colour = 1", "colour: unknown key"),
])
def test_sync_config_is_validated(tmp_path, line, message):
    from edgekit.sync.client import SyncConfig

    path = tmp_path / "sync.toml"
    path.write_text(f'db = "{tmp_path}/log.db"\nurl = "https://c.example"\ntoken_file = "t"\n{line}\n')
    with pytest.raises(EdgekitError, match=message):
        SyncConfig.from_file(path)


@pytest.mark.parametrize("url", ["ftp://collector.example", "collector.example", "https://"])
def test_sync_urls_must_be_http(tmp_path, url):
    from edgekit.sync.client import SyncClient, SyncConfig

    path = tmp_path / "sync.toml"
    path.write_text(f'db = "{tmp_path}/log.db"\nurl = "{url}"\ntoken_file = "t"\n')
    with pytest.raises(EdgekitError, match="must be http:// or https://"):
        SyncConfig.from_file(path)
    with pytest.raises(EdgekitError, match="must be http:// or https://"):
        SyncClient(LogStore(tmp_path / "log.db"), url, "token")


def test_a_batch_prediction_takes_one_label_per_row(tmp_path):
    """One label on a batch of 4 was stored, then dropped by every export that had to place it."""
    store = LogStore(tmp_path / "log.db")
    batch = store.append({"input": np.ones((4, 8), np.float32)}, {"logits": np.ones((4, 3), np.float32)}, "m")
    single = store.append({"input": np.ones((1, 8), np.float32)}, {"logits": np.ones((1, 3), np.float32)}, "m")
    with pytest.raises(EdgekitError, match="holds 4 rows; its label must be a list of 4"):
        store.feedback(batch, label=2)
    with pytest.raises(EdgekitError, match="holds one row; give one label"):
        store.feedback(single, label=[1, 2])
    store.feedback(batch, label=[0, None, 2, 1])
    store.feedback(single, label=1)
    store.feedback(batch, outcome="accepted")  # an outcome alone needs no labels
    assert store.db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 3
    store.close()
