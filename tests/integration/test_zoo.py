"""Models built here to mirror third-party exports (tests/zoo), through `edgekit optimize`, each
judged on real samples by its task's own check: a CRNN with a dynamic width, a MobileNet-style classifier
exported with torch.onnx's default fixed batch of 1, a keyword-spotting GRU."""

import json

import numpy as np
import pytest

from tests.conftest import require_onnx2tf
from tests.zoo import crnn, gru_kws, minilm_dynamic, mobilenet

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def recogniser(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crnn")
    path = crnn.build(folder)
    return path, crnn.data_file(folder / "lines.npz")


def test_crnn_batch1_dynamic_width_reads_rendered_lines_at_their_own_width(recogniser, tmp_path, cli):
    """A CTC recogniser exported with a fixed batch of 1 and a dynamic width, on font-rendered lines
    of their natural widths (48-246 px): static int8 calibrates one line at a time at its own
    width, every candidate is judged by its decoded text, the TFLite variants hold one graph per
    width bucket of the data (onnx2tf fixes widths), and the bundle reads fresh lines of any
    width as fp32 does, through the winner and through the TFLite variant."""
    require_onnx2tf()
    from edgekit.runtime import load, registry

    onnx_path, lines = recogniser
    out = tmp_path / "o"
    result = cli("optimize", onnx_path, "--data", lines, "--task", "ctc", "--target", "host", "--timing-seconds", "2",
                 "--out", out)
    assert result.exit_code == 0, result.output
    assert "CER" in result.output and "lengths 4" in result.output  # the widths were read, not the padding
    report = json.loads((out / "report.json").read_text())
    by_id = {c["id"]: c for c in report["candidates"]}
    assert by_id["onnx-int8-static"]["status"] == "passed"  # batch 1: calibrated one line at a time
    assert all("CTC" in c["metrics"]["judged_by"] and "cer" in c["metrics"]
               for c in report["candidates"] if c["metrics"])
    tflite = by_id["tflite-fp32"]
    assert tflite["status"] == "passed", tflite["reason"]
    widths = np.load(lines)["lengths"]
    manifest = json.loads((out / "manifest.json").read_text())
    axis = manifest["axes"]["width"]
    assert axis["judged"] == [int(widths.min()), int(widths.max())]
    by_length = report["latency_by_length"]  # the winner timed at the data's median ... longest line
    assert by_length["candidate"] == report["winner"] and "at the data's own lengths" in result.output
    rows = by_length["rows"]
    median = int(np.sort(widths)[round(0.5 * (len(widths) - 1))])
    assert rows[0]["at"] == "median" and [rows[0]["length"], rows[-1]["length"]] == [median, int(widths.max())]
    assert all(r["target_ms"] == r["host_ms"] > 0 for r in rows)  # the host is the target: measured

    runtime = load(out)
    variant = next(v for v in manifest["variants"] if v["format"] == "tflite")
    litert = registry.open_variant("litert", out / variant["file"], variant, 1, (manifest["inputs"], manifest["outputs"]))
    assert len(litert.buckets) >= 3 and max(litert.buckets) >= widths.max()  # one graph per width bucket
    x, truth = crnn.held_out(80, seed=7)
    reference = [crnn.text_of(_run_source(onnx_path, line))[0] for line in x]
    shipped, through_tflite = [], []
    for line in x:
        answer = runtime.predict_validated({"x": line})
        assert answer["__variant__"] == report["winner"]  # no fallback at any width
        assert answer["logits"].shape[1] == line.shape[-1] // 4  # the line's own steps, not a bucket's
        shipped += crnn.text_of(answer["logits"])
        if line.shape[-1] <= max(litert.buckets):
            through_tflite += crnn.text_of(litert.run({"x": line})[0])
        else:
            through_tflite.append(None)
    right_fp32 = np.mean([a == b for a, b in zip(reference, truth)])
    assert right_fp32 >= 0.9  # the recogniser reads fresh rendered lines (a check of the check)
    assert np.mean([a == b for a, b in zip(shipped, reference)]) >= 0.95
    padded = [(a, b) for a, b in zip(through_tflite, reference) if a is not None]
    assert len(padded) >= 60 and np.mean([a == b for a, b in padded]) >= 0.95, padded[:5]


def _run_source(path, x):
    import onnxruntime as ort

    session = _run_source.sessions.setdefault(str(path), ort.InferenceSession(str(path)))
    return session.run(None, {"x": x})[0]


_run_source.sessions = {}


def _shipped(out, name, x):
    """The winner's answers through the runtime that ships, one sample at a time, and fallbacks."""
    from edgekit.runtime import load

    runtime = load(out)
    answers = [runtime.predict_validated({name: x[i:i + 1]}) for i in range(len(x))]
    return np.concatenate([a[next(k for k in a if not k.startswith("__"))] for a in answers]), runtime


def test_a_batch_1_mobilenet_export_is_judged_by_its_labels(tmp_path):
    """An ONNX file says nothing of its task: integer labels that index its one score vector make
    it a classifier, judged by accuracy, and the bundle labels fresh digits as fp32 does."""
    from edgekit.optimizer import optimize

    path = mobilenet.build(tmp_path / "model")
    x, labels = mobilenet.held_out()
    np.savez(tmp_path / "digits.npz", input=x[:200], labels=labels[:200])
    result = optimize(str(path), target="host", data=str(tmp_path / "digits.npz"), out=tmp_path / "out",
                      formats={"onnx"}, timing_s=1)
    report = result.report.to_dict()
    assert report["model"]["task"] == "classification" and any("judged as classification" in n for n in report["notes"])
    winner = next(c for c in report["candidates"] if c["id"] == result.winner)
    assert "accuracy" in winner["metrics"] and winner["metrics"]["accuracy_drop_points"] <= 1.0
    import onnxruntime as ort

    fresh = x[200:]
    scores, _ = _shipped(tmp_path / "out", "input", fresh)
    source = ort.InferenceSession(str(path))
    fp32 = np.array([source.run(None, {"input": fresh[i:i + 1]})[0].argmax() for i in range(len(fresh))])
    assert (scores.argmax(1) == fp32).mean() >= 0.98 and (scores.argmax(1) == labels[200:]).mean() > 0.9
    assert "int8 on this host" in " ".join(report["notes"])  # the int8 speed-up is measured and explained


def test_a_keyword_spotting_gru_keeps_its_words(tmp_path):
    from edgekit.optimizer import optimize

    path = gru_kws.build(tmp_path / "model")
    x, labels = gru_kws.clips(96, seed=5)
    np.savez(tmp_path / "clips.npz", mel=x, labels=labels)
    result = optimize(str(path), target="host", data=str(tmp_path / "clips.npz"), out=tmp_path / "out",
                      formats={"onnx"}, timing_s=1)
    assert result.report.to_dict()["model"]["task"] == "classification"
    fresh, truth = gru_kws.clips(60, seed=6)
    scores, runtime = _shipped(tmp_path / "out", "mel", fresh)
    assert (scores.argmax(1) == truth).mean() > 0.85 and runtime.stats()["fallbacks"] == 0


def test_a_dynamic_sequence_transformer_export_gets_its_fusions(tmp_path):
    """MiniLM as Optimum exports it computes its head split at run time: the transformer optimiser
    was called with the hidden size and no head count, failed an assertion, and took the fp32
    candidate with it. The fused graph now runs at any length and computes what the export does."""
    import onnxruntime as ort

    from edgekit.convert.onnx_optimize import optimize_transformer
    from edgekit.zoo import minilm

    path = minilm_dynamic.build(tmp_path)
    fusions = optimize_transformer(path, tmp_path / "fused.onnx")
    assert fusions.get("SkipLayerNormalization") and fusions.get("BiasGelu")
    plain, fused = ort.InferenceSession(str(path)), ort.InferenceSession(str(tmp_path / "fused.onnx"))
    for sentences in (minilm.sentences()[:3], minilm.sentences()[40:41]):
        feeds = minilm_dynamic.tokens(sentences)
        np.testing.assert_allclose(fused.run(None, feeds)[0], plain.run(None, feeds)[0], atol=1e-4)


def test_a_factory_model_is_named_and_versioned_by_the_user(tmp_path, cli):
    """`optimize mlp.py:build` named the model `build` and versioned it by the time; --name and
    --version go into the manifest of the bundle the fleet will log it by; a bad one is refused."""
    from pathlib import Path

    from edgekit.bundle import read_manifest

    factory = Path(__file__).resolve().parents[1] / "zoo" / "detector.py"
    result = cli("optimize", f"{factory}:build", "--data", f"{factory}:data", "--task", "detection", "--formats", "onnx",
                 "--precisions", "fp32", "--timing-seconds", "0.5", "--out", tmp_path / "det", "--package",
                 "--name", "street-det", "--version", "3")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "det.ekb")
    assert (manifest.model.name, manifest.model.version) == ("street-det", "3")
    again = cli("package", tmp_path / "det", "--out", tmp_path / "renamed.ekb", "--name", "street-det-v", "--version", "4")
    assert again.exit_code == 0 and read_manifest(tmp_path / "renamed.ekb").model.version == "4"
    bad = cli("optimize", f"{factory}:build", "--version", "../4", "--out", tmp_path / "bad")
    assert bad.exit_code == 1 and "--version '../4' is not a name" in bad.output and not (tmp_path / "bad").exists()


def test_the_bundle_runs_the_variant_optimize_chose(tmp_path):
    """MiniLM's int8 variant passed the guard over 100 sentences (mean cosine >= 0.99) and read
    0.9888 on the bundle's four golden samples, so every device skipped the winner at its
    self-test and ran fp32. The self-test's bar is now what the shipped variants score on those
    samples here, less a margin, never above the tolerance."""
    from edgekit import optimize
    from edgekit.runtime import load
    from edgekit.zoo import minilm

    path = minilm_dynamic.build(tmp_path)
    sentences = minilm.sentences()
    np.savez(tmp_path / "data.npz", **minilm_dynamic.tokens(sentences[::2], length=32))
    # int8 alone, so that it wins whatever this CPU times: at a sentence's own length int8 and fp32
    # can be a tie on a noisy 2-core host, and a tie goes to the more accurate fp32
    result = optimize(str(path), target="host", data=str(tmp_path / "data.npz"), task="embedding",
                      out=tmp_path / "out", formats={"onnx"}, precisions={"int8-dynamic"}, timing_s=1)
    assert result.winner == "onnx-int8-dynamic"
    model = load(tmp_path / "out")
    assert model.active.id == result.winner, [(v.id, v.skip_reason) for v in model.variants]
    bar = json.loads((tmp_path / "out" / "manifest.json").read_text())["golden"]["min_cosine"]
    scores = result.report.to_dict()["self_test"]["scores"]
    assert bar <= 0.99 and all(s - 0.01 >= bar - 1e-9 for s in scores.values()), (bar, scores)


def test_crnn_without_lengths_a_tflite_fixed_to_one_width_is_unfit(recogniser, tmp_path, cli):
    """The same lines without `lengths` (one padded width, as a user might save them): onnx2tf fixes
    the width it was given, so the TFLite variant runs that width only; it is marked unfit rather
    than shipped to fall back on every other line."""
    require_onnx2tf()
    onnx_path, lines = recogniser
    padded = tmp_path / "padded.npz"
    np.savez(padded, x=np.load(lines)["x"][:64])
    out = tmp_path / "o"
    result = cli("optimize", onnx_path, "--data", padded, "--task", "ctc", "--target", "host", "--precisions", "fp32",
                 "--timing-seconds", "1", "--out", out)
    assert result.exit_code == 0, result.output
    by_id = {c["id"]: c for c in json.loads((out / "report.json").read_text())["candidates"]}
    width = np.load(lines)["x"].shape[-1]
    assert by_id["tflite-fp32"]["status"] == "unfit" and f"fixed width {width}" in by_id["tflite-fp32"]["reason"]
    assert by_id["onnx-fp32"]["status"] == "passed"
