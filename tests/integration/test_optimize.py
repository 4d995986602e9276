"""edgekit optimize end to end on the real models."""

import hashlib
import json

import pytest

from edgekit.manifest import SCHEMA_VERSION as MANIFEST_SCHEMA

pytestmark = pytest.mark.integration
pytest.importorskip("torch")
pytest.importorskip("litert_torch")


def _check_out_dir(out, report):
    assert (out / "report.md").exists() and (out / "tradeoff.png").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    # schema 5 (varying axes) only where a dim varies: other bundles stay readable by older devices
    assert manifest["schema_version"] == (MANIFEST_SCHEMA if manifest.get("axes") else 4)
    assert manifest["variants"][0]["id"] == report["winner"]
    assert manifest["variants"][-1]["precision"] == "fp32" or len(manifest["variants"]) == 1  # safe fallback last
    for variant in manifest["variants"]:
        digest = hashlib.sha256((out / variant["file"]).read_bytes()).hexdigest()
        assert digest == variant["sha256"]
    best = next(out.glob("best.*"))
    winner = next(c for c in report["candidates"] if c["id"] == report["winner"])
    assert best.read_bytes() == (out / winner["file"]).read_bytes()
    return winner


@pytest.mark.parametrize("target", ["raspberrypi", "host"])
def test_optimize_digits_cli(cli, tmp_path, target):
    out = tmp_path / target
    result = cli("optimize", "--target", target, "--out", out, "--json", "--timing-seconds", "2")
    assert result.exit_code == 0, result.output
    assert "] building onnx-fp32" in result.stderr  # a step per line: the runner is not a terminal
    report = json.loads(result.stdout)
    winner = _check_out_dir(out, report)
    assert winner["status"] == "passed" and winner["metrics"]["accuracy_drop_points"] <= 1.0
    assert winner["metrics"]["accuracy"] > 0.95
    statuses = {c["id"]: c["status"] for c in report["candidates"]}
    if target == "raspberrypi":
        assert {"tflite-int8-static", "tflite-fp16", "onnx-int8-static"} <= set(statuses)
        assert winner["latency_source"].startswith("estimate (published device model fitted on")
        assert any("estimate" in note for note in report["notes"])
        _check_estimates_respect_host_timings(report)
    else:
        assert winner["latency_source"] == "measured on this host"
        _check_int8_explained(report)
    assert report["data"]["eval_synthetic"] is False


def _check_estimates_respect_host_timings(report):
    """No estimate is faster relative to fp32 on the Pi than this host's measurement allows once the
    two machines' int8 (fp16) to fp32 peak ratios are taken into account."""
    from edgekit.devices import host_profile, resolve
    from edgekit.optimizer.estimate import compute_precision, peak

    host, target = host_profile(), resolve("raspberrypi")
    timed = [c for c in report["candidates"] if c["latency_target_ms"]]
    # the fastest candidate computing in fp32 on the Pi (fp16 and weight-only files run as fp32 there)
    fp32 = min((c for c in timed if compute_precision(c["precision"], c["format"], target) == "fp32"),
               key=lambda c: c["latency_host"]["p50_ms"])
    for c in timed:
        gain = [peak(p, compute_precision(c["precision"], c["format"], p)) / peak(p, "fp32") for p in (host, target)]
        host_ratio = c["latency_host"]["p50_ms"] / fp32["latency_host"]["p50_ms"]
        assert c["latency_target_ms"] / fp32["latency_target_ms"] >= host_ratio * gain[0] / gain[1] * 0.999, c["id"]


def _check_int8_explained(report):
    """int8's measured speed-up is reported against onnxruntime fp32 and the int8 format's own fp32,
    and where int8 itself gains under 1.5x the note says why from measurements, whatever the CPU."""
    from edgekit.devices import host_profile

    row, cands = report["int8_host"], {c["id"]: c for c in report["candidates"]}
    p50 = {cid: c["latency_host"]["p50_ms"] for cid, c in cands.items() if c["latency_host"]}
    int8 = {cid for cid, c in cands.items() if c["precision"] in ("int8-dynamic", "int8-static")}
    assert row["baseline"] == "onnx-fp32" and row["int8"] in int8  # int8 compute, not weight-only
    assert p50[row["int8"]] == min(p50[k] for k in int8 if k in p50)
    assert row["speedup"] == round(p50["onnx-fp32"] / p50[row["int8"]], 2)
    assert row["own_speedup"] == round(p50[f"{cands[row['int8']]['format']}-fp32"] / p50[row["int8"]], 2)
    note = next(n for n in report["notes"] if n.startswith("int8 on this host"))
    if min(row["speedup"], row["own_speedup"]) < 1.5:
        assert row["reasons"] and "because" in note
        assert ("no fused int8 dot product" in row["reasons"][0]) == (not host_profile().cpu.int8_dot_product)
        assert "fp32_compute_share" in row and "int8_conversion_share" in row  # both profiled
    else:
        assert not row["reasons"] and "because" not in note


def test_optimize_minilm_host_finds_a_fast_accurate_variant(tmp_path):
    from edgekit.optimizer import optimize

    result = optimize("edgekit:minilm", target="host", out=tmp_path / "m", timing_s=5)
    report = result.report.to_dict()
    winner = _check_out_dir(tmp_path / "m", report)
    # int8 variants pass the guard on any CPU; which one wins (or fp32, when a loaded machine cannot
    # tell them apart and the more accurate is kept) is a matter of timing, not of this test.
    assert any(c["precision"].startswith("int8") for c in report["candidates"] if c["status"] == "passed")
    assert winner["metrics"]["cosine_mean"] >= 0.99  # the guard's default tolerance
    # The ONNX int8 on AVX2 without VNNI (7-bit weights) is the least exact (one sentence at cosine
    # 0.97): judge the winner by the task, as a user would. Sentence similarity, over all 204
    # shipped sentences, from the bundle that ships.
    spearman, recall = _similarity_kept(tmp_path / "m")
    assert spearman >= 0.98 and recall >= 0.95, (spearman, recall)
    # How much faster it is belongs to benchmarks/optimize_minilm.py, not to a test.
    # both formats were built from the one PyTorch source
    assert {"onnx", "tflite"} <= {c["format"] for c in report["candidates"] if c["status"] == "passed"}
    assert "onnx-fused" in report["exports"] and report["exports"]["onnx"]["exporter"] == "torchscript"
    # the fusions onnxruntime matches on TorchScript's graph, and SkipLayerNormalization kept or left
    # apart by what was measured here (it is slower fused on some CPUs); the shipped graph agrees
    fused = report["exports"]["onnx-fused"]
    verdict = fused["skip_layer_norm"]
    assert fused["fusions"]["Attention"] == 6 and "side by side on this host" in verdict
    assert verdict.startswith(("fused:", "left apart")) and any(verdict in n for n in report["notes"])
    import onnx

    shipped = {n.op_type for n in onnx.load(str(tmp_path / "m" / "artifacts" / "onnx-fp32.onnx")).graph.node}
    assert ("SkipLayerNormalization" in shipped) == ("SkipLayerNormalization" in fused["fusions"]) == \
        verdict.startswith("fused:")


def _similarity_kept(out) -> tuple[float, float]:
    """(Spearman correlation of all pairwise similarities, share of sentences whose fp32 nearest
    neighbour is among the optimised model's five nearest): what retrieval and deduplication need."""
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from edgekit.runtime import load
    from edgekit.zoo import minilm

    feeds = minilm.tokenize(minilm.sentences())
    with torch.no_grad():
        ref = minilm.build_module()(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))).numpy()
    runtime = load(out)
    got = np.concatenate([next(iter(runtime.predict({k: v[i:i + 32] for k, v in feeds.items()}).values()))
                          for i in range(0, len(ref), 32)])

    def similarities(e):
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        return sim

    s_ref, s_got = similarities(ref), similarities(got)
    upper = np.triu_indices(len(ref), 1)
    nearest, top5 = s_ref.argmax(1), np.argsort(-s_got, axis=1)[:, :5]
    return float(spearmanr(s_ref[upper], s_got[upper]).statistic), float((top5 == nearest[:, None]).any(1).mean())


def test_synthetic_data_is_said_plainly(cli, tmp_path, tiny_onnx):
    out = tmp_path / "o"
    result = cli("optimize", tiny_onnx, "--target", "host", "--out", out, "--timing-seconds", "1")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["eval_synthetic"] is True
    assert "SYNTHETIC INPUTS ONLY" in (out / "report.md").read_text()
    # an ONNX source reaches both of the host's runtimes: TFLite through onnx2tf
    assert {c["format"] for c in report["candidates"]} == {"onnx", "tflite"}
    assert report["exports"]["tflite"]["exporter"] == "onnx2tf"


def test_convert_and_quantize_commands(cli, tmp_path):
    onnx_path = tmp_path / "d.onnx"
    result = cli("convert", "edgekit:digits-cnn", "--to", "onnx", "--out", onnx_path, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["exporter"] in ("dynamo", "torchscript") and onnx_path.exists()
    tfl = tmp_path / "d.tflite"
    assert cli("convert", "edgekit:digits-cnn", "--to", "tflite", "--out", tfl).exit_code == 0 and tfl.exists()
    q = tmp_path / "q.onnx"
    result = cli("quantize", onnx_path, "--precision", "int8-dynamic", "--out", q, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["metrics"]["cosine_mean"] > 0.99 and q.exists()
    q2 = tmp_path / "q.tflite"
    result = cli("quantize", "edgekit:digits-cnn", "--precision", "int8-static", "--format", "tflite", "--out", q2)
    assert result.exit_code == 0, result.output
    assert q2.exists()
    # an exported ONNX file reaches TFLite too (onnx2tf), checked against onnxruntime
    from_onnx = cli("convert", onnx_path, "--to", "tflite", "--out", tmp_path / "x.tflite")
    assert from_onnx.exit_code == 0 and "with onnx2tf" in from_onnx.output and (tmp_path / "x.tflite").exists()


SLOW_TFLITE = '''
import sys
import time

import torch


def _converting_to_tflite() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if "litert_torch" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        if _converting_to_tflite():
            time.sleep(3600)  # a converter that never ends
        return self.fc(x)


def build():
    return Net(), (torch.zeros(1, 8),)
'''


def test_time_budget_stops_a_converter_that_never_ends(tmp_path):
    """--time-budget 400 ran 937 s: a converter past the deadline went on. Now it is killed at
    the deadline, the fp32 ONNX (built first) still ships, and the report names what was stopped."""
    import subprocess
    import sys

    (tmp_path / "net.py").write_text(SLOW_TFLITE)
    # without the stop the run lasts the converter's 3600 s: the timeout fails it
    run = subprocess.run([sys.executable, "-m", "edgekit", "optimize", "net.py:build", "--target", "host",
                          "--time-budget", "60", "--timing-seconds", "1", "--out", "o"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    tflite = next(c for c in report["candidates"] if c["id"] == "tflite-fp32")
    assert tflite["status"] == "failed" and "stopped after" in tflite["reason"]
    assert report["winner"].startswith("onnx-") and "the tflite conversion (stopped at the deadline)" in \
        report["budget"]["skipped"]
    assert "stopped" in run.stdout and "--time-budget" in run.stdout
    # the killed converter is gone too (a forked child carries its parent's command line)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert not [line for line in ps.splitlines() if "net.py:build" in line]
