import json

import numpy as np
import pytest

from edgekit.bench import BenchOptions, run_bench
from edgekit.bench.runner import _steady, expand
from edgekit.bench.stats import latency_stats
from edgekit.errors import EdgekitError, ModelLoadError

FAST = dict(min_runs=20, min_seconds=0.2, warmup_runs=2, warmup_s=0.05)


def test_stats_on_known_timings():
    s = latency_stats([float(v) for v in range(1, 101)], batch=4)
    assert s["n"] == 100 and s["min_ms"] == 1 and s["max_ms"] == 100
    assert s["p50_ms"] == pytest.approx(50.5) and s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01) and s["mean_ms"] == pytest.approx(50.5)
    assert s["std_ms"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert s["throughput_per_s"] == pytest.approx(4 * 1000 / 50.5)
    assert not s["p99_reliable"]


class FakeWorker:
    def __init__(self, name, log, cost):
        self.name, self.log, self.cost = name, log, cost

    def ask(self, cmd):
        self.log.append((self.name, cmd["n"]))
        return {"ms": [self.cost] * cmd["n"]}


def test_interleaving_takes_turns_in_rotating_order():
    log = []
    workers = [({}, FakeWorker("a", log, 1.0), {"warmup": {"mean_ms": 10.0}}),
               ({}, FakeWorker("b", log, 5.0), {"warmup": {"mean_ms": 5.0}})]
    samples = _steady(workers, BenchOptions(min_runs=8, min_seconds=0.0), lambda m: None)
    names = [name for name, _ in log]
    assert names[:6] == ["a", "b", "b", "a", "a", "b"]
    assert dict(log[:2]) == {"a": 2, "b": 4}  # bursts of ~20 ms each
    assert len(samples[0]) >= 8 and len(samples[1]) >= 8


def test_json_schema_and_single_variant(tiny_onnx):
    result = run_bench([str(tiny_onnx)], BenchOptions(**FAST))
    assert result.schema == "edgekit.bench/1" and not result.interleaved and result.spinning
    row = result.to_dict()["results"][0]
    for key in ("label", "artifact", "sha256", "file_size_bytes", "threads", "batch", "provider_requested",
                "provider_active", "fell_back", "inputs", "phases", "steady", "memory", "ratio_p90_vs_baseline"):
        assert key in row, key
    assert set(row["phases"]) == {"load_ms", "first_inference_ms", "warmup"}
    assert row["phases"]["warmup"]["n"] >= 2 and row["steady"]["n"] >= 20
    assert row["memory"]["peak_rss_mb"] >= row["memory"]["rss_bare_mb"] > 0
    assert row["inputs"].startswith("synthetic")
    env = result.environment
    assert env["cores"] >= 1 and "onnxruntime" in env["versions"]
    assert json.loads(json.dumps(result.to_dict()))["results"][0]["label"] == result.results[0].label  # JSON as is


def test_sweeps_make_variants_and_ratios(tiny_onnx):
    result = run_bench([str(tiny_onnx)], BenchOptions(threads=[1, 2], batches=[1, 4], **FAST))
    labels = [r.label for r in result.results]
    assert len(labels) == 4 and "tiny.onnx [t1 b4]" in labels
    assert result.interleaved and not result.spinning
    assert result.results[0].ratio_p50_vs_baseline == 1.0
    assert {r.batch for r in result.results} == {1, 4}


def test_cuda_fallback_is_reported_and_strict_fails(tiny_onnx):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("GPU: one is present, and this tests the fallback without")
    result = run_bench([str(tiny_onnx)], BenchOptions(provider="cuda", **FAST))
    row = result.results[0]
    assert row.provider_requested == "cuda" and row.provider_active == "cpu" and row.fell_back
    with pytest.raises(EdgekitError, match="asked for cuda, but cpu ran"):
        run_bench([str(tiny_onnx)], BenchOptions(provider="cuda", strict_provider=True, **FAST))


@pytest.mark.skipif("CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
                    reason="GPU: needs one, with onnxruntime-gpu")
def test_cuda_provider_runs_where_present(tiny_onnx):  # pragma: no cover - GPU machines only
    row = run_bench([str(tiny_onnx)], BenchOptions(provider="cuda", strict_provider=True, **FAST)).results[0]
    assert row.provider_active == "cuda"


def test_bad_inputs_are_clear(tiny_onnx, tmp_path):
    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    with pytest.raises(EdgekitError, match="not a valid ONNX file|fails the ONNX checker"):
        run_bench([str(bad)], BenchOptions(**FAST))
    data = tmp_path / "x.npz"
    np.savez(data, x=np.ones((3, 5), np.float32))
    with pytest.raises(EdgekitError, match="data input 'x' has samples of shape \\(5,\\), the model expects 4 per sample"):
        run_bench([str(tiny_onnx)], BenchOptions(input_data=str(data), **FAST))
    with pytest.raises(ModelLoadError, match="does not exist"):
        expand([str(tmp_path / "none.onnx")])
    with pytest.raises(EdgekitError, match="unknown provider"):
        BenchOptions(provider="npu")


def test_real_input_data(tiny_onnx, tmp_path):
    data = tmp_path / "x.npz"
    np.savez(data, x=np.ones((3, 4), np.float32))
    row = run_bench([str(tiny_onnx)], BenchOptions(input_data=str(data), batches=[5], **FAST)).results[0]
    assert row.inputs == f"real: {data}" and row.input_shapes == {"x": [5, 4]}


def test_optimize_output_directory_expands_to_its_variants(tmp_path, tiny_onnx):
    import shutil

    out = tmp_path / "opt"
    (out / "artifacts").mkdir(parents=True)
    shutil.copy(tiny_onnx, out / "artifacts" / "a.onnx")
    shutil.copy(tiny_onnx, out / "artifacts" / "b.onnx")
    (out / "manifest.json").write_text(json.dumps({"variants": [
        {"id": "a", "file": "artifacts/a.onnx", "format": "onnx"}, {"id": "b", "file": "artifacts/b.onnx", "format": "onnx"}]}))
    assert [label for label, _, _ in expand([str(out)])] == ["a", "b"]


def test_console_table_fits_120_columns_untruncated(tiny_onnx, cli):
    result = cli("bench", tiny_onnx, tiny_onnx, "--min-runs", "20", "--min-seconds", "0.2", "--warmup-runs", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 120
    assert "…" not in result.output  # no header or value cut short ("threa…", "xnnpa…")
    header = next(line for line in lines if line.startswith("artifact"))
    for word in ("threads", "batch", "provider", "p50 ms", "p90 ms", "p99 ms", "p90 vs base", "load ms", "+RSS MB"):
        assert word in header, header
