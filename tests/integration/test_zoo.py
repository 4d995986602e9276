"""Models built here to mirror third-party exports (tests/zoo), through `edgekit optimize`, each
judged on real samples by its task's own check."""

import json

import numpy as np
import pytest

from tests.conftest import require_onnx2tf
from tests.zoo import crnn

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
