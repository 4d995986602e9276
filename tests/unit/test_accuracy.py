from types import SimpleNamespace

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.optimizer.accuracy import Tolerance, compare, shortfall, verdict
from edgekit.optimizer.estimate import estimate_ms
from edgekit.optimizer.timing import interleaved, summary
from edgekit.devices import resolve


def test_metrics_on_known_outputs():
    ref = [np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])]
    out = [np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])]
    m = compare(ref, out, labels=np.array([0, 1, 1]), task="classification")
    assert m["cosine_mean"] == pytest.approx(2 / 3) and m["cosine_min"] == pytest.approx(0.0)
    assert m["top1_agreement"] == pytest.approx(2 / 3)
    # argmax of [1, 1] is class 0: the reference gets 2 of 3 labels right, the candidate 1 of 3
    assert m["reference_accuracy"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(1 / 3)
    assert m["accuracy_drop_points"] == pytest.approx(100 / 3)
    assert m["max_abs_error"] == 1.0


def test_verdict_and_shortfall():
    good = {"finite": True, "cosine_mean": 0.995, "cosine_min": 0.97, "top1_agreement": 1.0}
    assert verdict(good, Tolerance()) == (True, "")
    ok, why = verdict(good, Tolerance(min_cosine_floor=0.98))
    assert not ok and "min cosine 0.9700 < 0.98" in why
    bad = dict(good, cosine_mean=0.96)
    assert not verdict(bad, Tolerance())[0] and shortfall(bad, Tolerance()) == pytest.approx(0.03)
    nan = compare([np.ones((2, 2))], [np.full((2, 2), np.nan)], None, "embedding")
    assert verdict(nan, Tolerance()) == (False, "non-finite outputs (NaN or inf)")
    labelled = {"finite": True, "cosine_mean": 0.999, "cosine_min": 0.99, "top1_agreement": 0.95,
                "accuracy_drop_points": 0.5}
    assert verdict(labelled, Tolerance())[0]  # with labels, the task metric decides


def test_tolerance_parsing():
    assert Tolerance.parse("0.98").min_cosine == 0.98
    t = Tolerance.parse("cosine=0.97,min_cosine=0.9,top1=0.95,accuracy_drop=2")
    assert (t.min_cosine, t.min_cosine_floor, t.min_top1, t.max_accuracy_drop) == (0.97, 0.9, 0.95, 2)
    for bad in ("fast", "cosine=2", "speed=1"):
        with pytest.raises(EdgekitError, match="bad --tolerance"):
            Tolerance.parse(bad)


def test_interleaving_order_and_stats_with_a_fake_clock():
    order, now = [], [0.0]
    cost = {"a": 1.0, "b": 3.0}

    def clock():
        return now[0]

    def make(key):
        def run():
            order.append(key)
            now[0] += cost[key] / 1000
        return run

    samples = interleaved({"a": make("a"), "b": make("b")}, warmup=1, min_rounds=4, max_rounds=4, clock=clock)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then rotating rounds
    assert samples["a"] == pytest.approx([1.0] * 4) and samples["b"] == pytest.approx([3.0] * 4)
    stats = summary([1.0, 2.0, 3.0, 4.0])
    assert stats["p50_ms"] == 2.5 and stats["n"] == 4 and stats["min_ms"] == 1.0


def test_estimate_follows_peaks():
    host, pi4, pi5 = resolve("x86-avx512-vnni"), resolve("raspberrypi4"), resolve("raspberrypi5")
    fp32_pi4 = estimate_ms(10.0, "fp32", "tflite", host, pi4, 0)
    assert fp32_pi4 == pytest.approx(10.0 * 768 / 57.6)
    # int8 gains on the host shrink on a Pi 4 (no sdot) and hold on a Pi 5 (sdot)
    int8_pi4 = estimate_ms(4.0, "int8-dynamic", "tflite", host, pi4, 0)
    int8_pi5 = estimate_ms(4.0, "int8-dynamic", "tflite", host, pi5, 0)
    assert int8_pi4 / fp32_pi4 > int8_pi5 / estimate_ms(10.0, "fp32", "tflite", host, pi5, 0)
    # a TFLite fp16 file computes in fp32 on a CPU (XNNPACK unpacks it), even with fp16 units
    assert estimate_ms(10.0, "fp16", "tflite", host, pi5, 0) == estimate_ms(10.0, "fp32", "tflite", host, pi5, 0)
    # an fp16 ONNX on a GPU with fp16 units computes in fp16
    nano = resolve("jetson-nano")
    assert estimate_ms(10.0, "fp16", "onnx", host, nano, 0) < estimate_ms(10.0, "fp32", "onnx", host, nano, 0)
    # the memory floor: streaming 100 MB at 12.8 GB/s
    assert estimate_ms(0.001, "fp32", "onnx", host, pi4, 100_000_000) == pytest.approx(100 / 12.8, rel=1e-6)


DEMO_PI = [  # the demo on raspberrypi: four candidates at one point, two more close by
    ("tflite-int8-dynamic", "tflite", 0.02, 1.0, 0.10e6), ("tflite-int8-static", "tflite", 0.01, 0.9956, 0.10e6),
    ("onnx-int8-static", "onnx", 0.05, 0.9979, 0.11e6), ("tflite-int8-weight-only", "tflite", 0.02, 1.0, 0.10e6),
    ("tflite-fp16", "tflite", 0.02, 1.0, 0.18e6), ("tflite-fp32", "tflite", 0.02, 1.0, 0.36e6),
    ("onnx-fp32", "onnx", 0.09, 1.0, 0.37e6)]


@pytest.mark.parametrize("rows", [None, DEMO_PI], ids=["close", "demo-pi"])
def test_tradeoff_plot_labels_never_overlap_and_markers_follow_file_size(tmp_path, rows):
    """Labels are measured on the figure as saved: placed before the final layout, two of the
    demo's labels overlapped in the picture while the placement said they did not."""
    pytest.importorskip("matplotlib")
    from matplotlib.transforms import Bbox

    from edgekit.optimizer.report import plot

    close = rows or [("tflite-int8-static", "tflite", 0.051, 0.9991, 40e3), ("tflite-int8-dynamic", "tflite", 0.052, 0.9995, 45e3),
             ("tflite-fp16", "tflite", 0.053, 1.0, 90e3), ("tflite-fp32", "tflite", 0.054, 1.0, 170e3),
             ("onnx-fp32", "onnx", 0.07, 1.0, 170e3)]
    from types import SimpleNamespace as Row  # the attributes of an OptimizeReport that plot reads

    report = Row(candidates=[Row(id=i, format=f, latency_target_ms=ms, metrics={"cosine_mean": cos}, size_bytes=size)
                             for i, f, ms, cos, size in close],
                 winner="tflite-int8-static", tolerance={"min_cosine": 0.99},
                 target=Row(id="raspberrypi5", is_host=False), model=Row(name="digits-cnn"))
    layout = plot(report, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 0
    boxes = [Bbox.from_bounds(*b) for b in layout["labels"].values()]
    assert len(boxes) == len(close)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    if rows:
        return
    areas = layout["areas"]
    assert areas["tflite-int8-static"] < areas["tflite-fp16"] < areas["tflite-fp32"]
    assert areas["tflite-fp32"] / areas["tflite-int8-static"] > 3  # visibly different, not clamped alike


def test_each_field_of_an_output_is_judged_on_its_own():
    """A detector's [N, anchors, 4 + classes]: boxes in pixels dominate one cosine, so scores
    rounded to a single value passed at 0.99999; the scores' own column fails now. A map's empty
    border (spatial, not a field) rounding to 0 is no failure."""
    from edgekit.optimizer.accuracy import Tolerance, compare, verdict

    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.uniform(0, 320, (32, 64, 4)), rng.uniform(0, 1, (32, 64, 3))], -1)
    broken = ref.copy()
    broken[..., 4:] = 0.69  # every score one value
    metrics = compare([ref], [broken], None, "generic")
    assert metrics["cosine_mean"] > 0.9999
    ok, why = verdict(metrics, Tolerance())
    assert not ok and "slice 4 of axis 2 collapsed to 1 value(s)" in why
    noisy = ref + rng.normal(0, 0.01, ref.shape)
    assert verdict(compare([ref], [noisy], None, "generic"), Tolerance())[0]
    page = rng.uniform(0, 1, (4, 1, 32, 32))
    page[..., -1] = rng.uniform(0, 1e-3, (4, 1, 32))  # an empty border column
    rounded = page.copy()
    rounded[..., -1] = 0.0
    assert verdict(compare([page], [rounded], None, "generic"), Tolerance())[0]


def test_a_recogniser_is_judged_by_its_decoded_text():
    """CTC logits where blank and a digit are nearly tied on some steps: a tiny change flips the
    greedy decode (a character lost) while every cosine stays above 0.999."""
    from edgekit.optimizer.accuracy import check_task, ctc_decode, edit_distance

    assert ctc_decode(np.eye(4)[[[1, 1, 0, 1, 2, 0, 0, 3]]]) == [(1, 1, 2, 3)]  # repeats merged, blanks split them
    assert edit_distance((1, 2, 3), (1, 3)) == 1 and edit_distance((), (4, 4)) == 2
    rng = np.random.default_rng(0)
    steps = rng.integers(1, 11, size=(64, 12))
    steps[:, 1::2] = 0  # blank between characters
    ref = np.log(np.full((64, 12, 11), 1e-3))
    np.put_along_axis(ref, steps[..., None], 0.0, axis=-1)
    ref[np.arange(64), 2, steps[:, 2]], ref[:, 2, 0] = -0.70, -0.71  # step 2: its character just ahead of blank
    out = ref.copy()
    out[:32, 2, 0] = -0.69  # half the lines lose their second character
    metrics = compare([ref], [out], None, "ctc")
    assert metrics["cosine_min"] > 0.999 and metrics["text_agreement"] == 0.5 and 0 < metrics["cer"] < 0.2
    ok, why = verdict(metrics, Tolerance())
    assert not ok and "character error rate" in why
    assert verdict(metrics, Tolerance.parse("cer=0.2"))[0]
    assert "CTC" in metrics["judged_by"]
    assert compare([ref], [ref], None, "ctc")["cer"] == 0.0
    with pytest.raises(EdgekitError, match="unknown --task"):
        check_task("ocr")
    assert check_task("ctc:36") == "ctc:36"
    with pytest.raises(EdgekitError, match=r"\[samples, time, classes\]"):
        compare([ref[:, 0]], [ref[:, 0]], None, "ctc")


def _yolo_head(rng, samples=16, anchors=64, classes=3):
    """Raw YOLO rows: box centre and size in pixels (a 320 px picture), then one score per class."""
    centre = rng.uniform(20, 300, (samples, anchors, 2))
    size = rng.uniform(20, 80, (samples, anchors, 2))
    scores = rng.beta(0.3, 2.0, (samples, anchors, classes))  # most anchors see nothing
    return np.concatenate([centre, size, scores], -1).astype(np.float32)


def test_a_detector_is_judged_by_its_decoded_boxes():
    """Scores rounded away, or boxes moved by half their size, keep a whole-output cosine above
    0.99 (the pixels dominate); decoded and matched against fp32's boxes, neither finds anything."""
    rng = np.random.default_rng(0)
    ref = _yolo_head(rng)
    close = ref + np.concatenate([rng.normal(0, 0.3, ref[..., :4].shape), rng.normal(0, 0.003, ref[..., 4:].shape)],
                                 -1).astype(np.float32)
    no_scores = ref.copy()
    no_scores[..., 4:] = 0.0
    moved = ref.copy()
    moved[..., :2] += moved[..., 2:4] * 0.6
    tolerance = Tolerance()
    good = compare([ref], [close], None, "detection")
    assert good["boxes_fp32"] > 50 and good["map50"] > 0.95 and verdict(good, tolerance)[0], good
    for broken in (no_scores, moved):
        m = compare([ref], [broken], None, "detection")
        ok, why = verdict(m, tolerance)
        assert m["cosine_mean"] > 0.99 and m["map50"] < 0.2 and not ok and "decoded detections: mAP@0.5" in why, m
    # YOLOv8's channels-first head reads the same
    first = compare([ref.transpose(0, 2, 1)], [close.transpose(0, 2, 1)], None, "detection")
    assert first["map50"] == good["map50"] and first["boxes_fp32"] == good["boxes_fp32"]


def test_integer_labels_that_index_the_scores_make_a_classifier():
    """An ONNX classifier with labelled --data is judged by accuracy (it showed `acc -`); labels
    that do not index one score vector leave the model generic."""
    from edgekit.spec import TensorSpec
    from edgekit.optimizer.pipeline import _labels_are_classes

    def model(*shape):
        return SimpleNamespace(outputs=[TensorSpec("logits", shape, "float32")])

    labels = np.array([0, 3, 9, 1])
    assert _labels_are_classes(model(1, 10), labels) and _labels_are_classes(model("batch", 10), labels)
    assert not _labels_are_classes(model(1, 8), labels)  # label 9 indexes no score
    assert not _labels_are_classes(model(1, 10, 4), labels)  # boxes, not one score vector
    assert not _labels_are_classes(model(1, 10), labels.astype(np.float32))  # regression targets
    assert not _labels_are_classes(model(1, 10), None)
