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
    np.savez(folder / "lines.npz", x=crnn.held_out(256, seed=5)[0])
    return path, folder / "lines.npz"


def test_crnn_batch1_dynamic_width_is_judged_by_its_text_and_keeps_any_width(recogniser, tmp_path, cli):
    """A CTC recogniser exported with a fixed batch of 1 and a dynamic width: static int8 calibrates
    one line at a time, every candidate is judged by its decoded text, and the TFLite variants,
    which onnx2tf fixed to the data's width, are not chosen: the shipped bundle reads a line of any
    width on its first variant."""
    require_onnx2tf()
    from edgekit.runtime import load

    onnx_path, lines = recogniser
    out = tmp_path / "o"
    result = cli("optimize", onnx_path, "--data", lines, "--task", "ctc", "--target", "host", "--timing-seconds", "2",
                 "--out", out)
    assert result.exit_code == 0, result.output
    assert "CER" in result.output
    report = json.loads((out / "report.json").read_text())
    by_id = {c["id"]: c for c in report["candidates"]}
    assert by_id["onnx-int8-static"]["status"] == "passed"  # batch 1: calibrated one line at a time
    assert all("CTC" in c["metrics"]["judged_by"] and "cer" in c["metrics"]
               for c in report["candidates"] if c["metrics"])
    fixed = [c for c in report["candidates"] if c["format"] == "tflite" and c["metrics"]]
    assert fixed and all(c["status"] == "unfit" and "fixed width 80" in c["reason"] for c in fixed)
    assert by_id[report["winner"]]["format"] == "onnx"

    runtime = load(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {v["id"] for v in manifest["variants"]}.isdisjoint(c["id"] for c in fixed)
    for length, seed in ((5, 7), (3, 8), (8, 9)):  # the data's width, narrower, wider
        x, truth = crnn.held_out(60, length, seed)
        reference = [crnn.text_of(_run_source(onnx_path, x[i:i + 1]))[0] for i in range(len(x))]
        shipped = []
        for i in range(len(x)):
            answer = runtime.predict_validated({"x": x[i:i + 1]})
            assert answer["__variant__"] == report["winner"]  # no fallback at any width
            shipped += crnn.text_of(answer["logits"])
        same = np.mean([a == b for a, b in zip(shipped, reference)])
        right, right_fp32 = (np.mean([a == b for a, b in zip(t, truth)]) for t in (shipped, reference))
        assert same >= 0.95 and right >= right_fp32 - 0.05, (length, same, right, right_fp32)
        assert right_fp32 >= 0.6  # the recogniser reads held-out lines (a check of the check)


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
    result = optimize(str(path), target="host", data=str(tmp_path / "data.npz"), task="embedding",
                      out=tmp_path / "out", formats={"onnx"}, precisions={"fp32", "int8-dynamic"}, timing_s=1)
    assert result.winner == "onnx-int8-dynamic"  # int8 wins here, as on every CPU with a real int8 path
    model = load(tmp_path / "out")
    assert model.active.id == result.winner, [(v.id, v.skip_reason) for v in model.variants]
    bar = json.loads((tmp_path / "out" / "manifest.json").read_text())["golden"]["min_cosine"]
    scores = result.report.to_dict()["self_test"]["scores"]
    assert bar <= 0.99 and all(s - 0.01 >= bar - 1e-9 for s in scores.values()), (bar, scores)
