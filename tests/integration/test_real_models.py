"""Real models as their authors ship them in wheels (PaddleOCR's PP-OCR detector and direction
classifier, Silero VAD) reach every target: ONNX -> TFLite through onnx2tf, a full-integer
Edge TPU model with its CPU ops named, inputs that are not batch first, recurrent state fed
back, fixed inputs, and calibration data from folders of pictures and WAV files."""

import json

import numpy as np
import pytest
from tests.conftest import ppocr, require_onnx2tf, silero_vad

from edgekit import optimize
from edgekit.zoo import synthetic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _image(height, width, mean, std, labels=()) -> str:
    """The [image] processing TOML (RGB, pixels / 255, then mean and std per channel)."""
    text = (f'[image]\ninput = "x"\nheight = {height}\nwidth = {width}\nmode = "RGB"\n'
            f"scale = 0.00392156862745098\nmean = {list(mean)}\nstd = {list(std)}\n")
    return text + (f"\n[[outputs]]\nlabels = {list(labels)}\n" if labels else "")


DET = _image(160, 160, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLS = _image(48, 192, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), labels=("0", "180"))
VAD = """[audio]
input = "input"
rate = 16000
hop = 512
"""


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    require_onnx2tf()
    root = tmp_path_factory.mktemp("samples")
    synthetic.pages(root / "pages", 16, size=(480, 480))
    synthetic.lines(root / "lines", 32)
    synthetic.speech(root / "speech", 4, seconds=2.0)
    for name, text in (("det.toml", DET), ("cls.toml", CLS), ("vad.toml", VAD)):
        (root / name).write_text(text)
    return root


def _processing(path):
    from edgekit.processing import declaration

    return declaration(path)


def _row(report, cid):
    return next(c for c in report["candidates"] if c["id"] == cid)


def test_ppocr_classifier_reaches_the_edge_tpu_through_onnx2tf(samples, tmp_path):
    # full-integer int8 moves the two class probabilities by a few hundredths: the guard holds it to
    # the accuracy on the labelled lines (upright in 0/, upside down in 180/) and cosine 0.98
    result = optimize(str(ppocr("cls")), target="coral-edgetpu", inputs=("x:1x3x48x192",),
                      data=str(samples / "lines"), processing=_processing(samples / "cls.toml"), out=tmp_path / "c",
                      tolerance="cosine=0.98", timing_s=0.5)
    report = result.report.to_dict()
    export = report["exports"]["tflite"]
    assert export["exporter"] == "onnx2tf"
    skipped = {a["converter"]: a for a in export["attempts"]}
    assert "onnx2torch+litert-torch" in skipped  # tried first, and why it did not run is recorded
    assert export["layout"]["inputs"] == {"x": [0, 2, 3, 1]}  # NHWC where the ONNX source took NCHW
    assert export["max_rel_diff"] < 1e-3 and export["cleaned"]["nodes_after"] < export["cleaned"]["nodes_before"]
    row = _row(report, "tflite-int8-static")
    assert row["status"] == "passed" and result.winner == "tflite-int8-static"
    # labels from the folders: the real model tells upright from upside-down lines far above chance
    assert row["metrics"]["accuracy_drop_points"] <= 1.0 and row["metrics"]["reference_accuracy"] >= 0.7
    tpu = row["build"]["edgetpu"]
    assert tpu["ops"] == tpu["tpu_ops"] + tpu["cpu_ops"] and tpu["tpu_ops"] > 0
    assert any(n.startswith("tflite-int8-static: Edge TPU") for n in report["notes"])
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["variants"][0]["layout"]["inputs"] == {"x": [0, 2, 3, 1]}


def test_ppocr_classifier_on_the_pi_keeps_a_float_tflite_and_onnx(samples, tmp_path):
    result = optimize(str(ppocr("cls")), target="raspberrypi", inputs=("x:1x3x48x192",),
                      data=str(samples / "lines"), processing=_processing(samples / "cls.toml"), out=tmp_path / "p",
                      timing_s=0.5)
    status = {c["id"]: c["status"] for c in result.report.to_dict()["candidates"]}
    assert status["tflite-fp32"] == "passed" and status["onnx-fp32"] == "passed"
    assert result.winner is not None

    # the device side opens the NHWC variant from the manifest and feeds it NCHW, as the guard did
    from edgekit.runtime import registry

    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    variant = next(v for v in manifest["variants"] if v["id"] == "tflite-fp32")
    assert variant["layout"]["inputs"] == {"x": [0, 2, 3, 1]}
    session = registry.open_variant("litert", tmp_path / "p" / variant["file"], variant, 1,
                                    (manifest["inputs"], manifest["outputs"]))
    golden = np.load(tmp_path / "p" / "golden.npz")
    got = session.run({"x": golden["input:x"]})[0]
    want = golden[f"output:{manifest['outputs'][0]['name']}"]
    np.testing.assert_allclose(got, want, atol=1e-4)


# The Edge TPU needs full-integer int8, which costs PP-OCRv4's detector about 0.06 of mean cosine
# on its probability map; what its post-processing keeps (pixels above DBNet's 0.3) is what the
# guard holds it to there.
@pytest.mark.parametrize("target,size,tolerance", [("raspberrypi", 160, None),
                                                   ("coral-edgetpu", 320, "cosine=0.9,iou=0.8,threshold=0.3")])
def test_ppocr_detector_on_rendered_pages(samples, tmp_path, target, size, tolerance):
    (samples / f"det{size}.toml").write_text(_image(size, size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    result = optimize(str(ppocr("det")), target=target, inputs=(f"x:1x3x{size}x{size}",),
                      data=str(samples / "pages"), processing=_processing(samples / f"det{size}.toml"),
                      tolerance=tolerance, out=tmp_path / target, timing_s=0.5)
    report = result.report.to_dict()
    assert result.winner is not None, report["candidates"]
    assert "pictures in" in report["data"]["eval"]
    cleaned = report["exports"]["onnx"]["cleaned"]
    assert cleaned["opset"] == "12 -> 13" and cleaned["kept"]
    if target == "coral-edgetpu":
        assert result.winner == "tflite-int8-static"
        win = _row(report, result.winner)
        assert win["metrics"]["iou"] >= 0.8 and "TensorFlow Lite converter" in win["build"]["recipe"]
        assert win["build"]["edgetpu"]["first_cpu_op"]["op"]  # the compiler's cut is named
        assert report["exports"]["tflite"]["layout"]["inputs"] == {"x": [0, 2, 3, 1]}


def test_silero_vad_with_state_fed_back_and_sr_fixed(samples, tmp_path):
    result = optimize(str(silero_vad()), target="raspberrypi", inputs=("input:1x576", "sr:int64:=16000"),
                      data=str(samples / "speech"), processing=_processing(samples / "vad.toml"),
                      tolerance="cosine=0.99,max_abs=0.02", out=tmp_path / "v", timing_s=0.5)
    report = result.report.to_dict()
    assert "WAV files" in report["data"]["eval"]
    cleaned = report["exports"]["onnx"]["cleaned"]
    assert cleaned["folded_inputs"] == ["sr"] and cleaned["ops_removed"]  # the sample-rate branch is gone
    win = _row(report, result.winner)
    assert win["metrics"]["max_abs_error"] <= 0.02  # speech probabilities within 0.02 of fp32
    spec = {s["name"]: s for s in report["model"]["inputs"]}
    assert spec["state"]["batch_axis"] == 1 and spec["state"]["state_of"] == "stateN"
    assert spec["sr"]["value"] == [16000]

    # on the device: sr comes from the bundle, the caller carries the state
    from edgekit.bundle import make_bundle
    from edgekit.errors import InputError
    from edgekit.runtime import load

    make_bundle(tmp_path / "v", tmp_path / "v.ekb")
    model = load(tmp_path / "v.ekb")
    state = np.zeros((2, 1, 128), np.float32)
    t = np.arange(576) / 16000
    out = model.predict({"input": (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)[None], "state": state})
    assert out["output"].shape == (1, 1) and out["stateN"].shape == (2, 1, 128)
    with pytest.raises(InputError, match="per stream"):
        model.batched()


def test_time_budget_bounds_the_whole_run_and_says_what_it_left_out(samples, tmp_path):
    from edgekit.optimizer import NoCandidatePassed

    try:
        result = optimize(str(ppocr("cls")), target="raspberrypi", inputs=("x:1x3x48x192",),
                          data=str(samples / "lines"), processing=_processing(samples / "cls.toml"),
                          out=tmp_path / "b", time_budget_s=1.0, timing_s=0.5)
    except NoCandidatePassed as exc:  # the budget may end before any candidate passed: still reported
        result = exc.result
        if not any(c["metrics"] for c in result.report.to_dict()["candidates"]):  # the cause named, not the tolerance
            assert "ran out before any candidate was evaluated" in str(exc) and "tolerance" not in str(exc)
    report = result.report.to_dict()
    skipped = [c for c in report["candidates"] if c["status"] == "skipped"]
    assert skipped and all("--time-budget of 1 s ran out" in c["reason"] for c in skipped)
    built = [c for c in report["candidates"] if c["status"] != "skipped"]
    assert not built or any(c["precision"] == "fp32" for c in built)  # the safe candidate is built first
    assert report["budget"]["skipped"] and any("--time-budget" in n for n in report["notes"])


def test_convert_command_takes_an_onnx_file_to_tflite(samples, tmp_path, cli):
    out = tmp_path / "cls.tflite"
    result = cli("convert", ppocr("cls"), "--to", "tflite", "--input", "x:1x3x48x192", "--out", out)
    assert result.exit_code == 0, result.output
    assert "with onnx2tf" in result.output and "tflite = numpy.transpose(onnx, [0, 2, 3, 1])" in result.output
    from edgekit.models import load_model

    assert load_model(str(out)).inputs[0].shape == (1, 48, 192, 3)
    # unsized dims: refused with the --input line to write, nothing written
    again = cli("convert", ppocr("cls"), "--to", "tflite", "--out", tmp_path / "x.tflite")
    assert again.exit_code != 0 and "--input x:1x3xSIZExSIZE" in again.output
    assert not (tmp_path / "x.tflite").exists()
