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


def test_feedback_policy_keeps_inputs_only_with_feedback(tmp_path):
    store = LogStore(tmp_path / "log.db", sampling=SamplingPolicy("feedback", feedback_window_s=0.2))
    a = store.append(X, CONFIDENT, "m")
    store.append(X, CONFIDENT, "m")
    assert store.next_batch(10)[0] == []  # held while feedback may still come
    store.feedback(a, label=1)
    import time

    time.sleep(0.25)
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
