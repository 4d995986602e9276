"""The winner is chosen on evidence: faster only where the difference is more than noise; within
noise, the more accurate, then the smaller."""

from types import SimpleNamespace

import numpy as np

from edgekit.optimizer.select import median_ci, pick


def _candidate(name, samples, cosine_min=1.0, drop=None, size=100, scale=1.0):
    samples = np.asarray(samples, dtype=np.float64)
    metrics = {"cosine_min": cosine_min} | ({"accuracy_drop_points": drop} if drop is not None else {})
    p50 = float(np.median(samples))
    return SimpleNamespace(name=name, target_ms=p50 * scale, size=size, metrics=metrics,
                           latency={"p50_ms": p50, "p50_ci_ms": list(median_ci(samples))})


def test_a_difference_within_noise_goes_to_the_more_accurate():
    """MiniLM: ONNX int8 at 18.71 ms and min cosine 0.969 beat TFLite int8 at 18.99 ms and 0.991."""
    rng = np.random.default_rng(0)
    onnx = _candidate("onnx-int8", 18.71 + rng.normal(0, 1.5, 60), cosine_min=0.969)
    tflite = _candidate("tflite-int8", 18.99 + rng.normal(0, 1.5, 60), cosine_min=0.991)
    winner, tied = pick([onnx, tflite])
    assert winner.name == "tflite-int8" and [t.name for t in tied] == ["onnx-int8"]


def test_a_real_difference_goes_to_the_faster():
    rng = np.random.default_rng(1)
    fast = _candidate("int8", 10 + rng.normal(0, 0.3, 200), cosine_min=0.97)
    slow = _candidate("fp32", 20 + rng.normal(0, 0.3, 200), cosine_min=1.0)
    winner, tied = pick([slow, fast])
    assert winner.name == "int8" and tied == []


def test_labels_decide_before_cosine_and_size_breaks_the_last_tie():
    """The demo: int8-static (97.6%, min cosine 0.956) against fp16 (97.8%, 1.0) at the same
    estimated latency: fp16. Two exact variants: the smaller file."""
    same = [5.0] * 30
    int8 = _candidate("int8-static", same, cosine_min=0.956, drop=0.2, size=10, scale=0.4)
    fp16 = _candidate("fp16", same, cosine_min=1.0, drop=0.0, size=20, scale=0.4)
    assert pick([int8, fp16])[0].name == "fp16"
    a = _candidate("tflite-fp32", same, size=36)
    b = _candidate("onnx-fp32", same, size=37)
    assert pick([b, a])[0].name == "tflite-fp32"


def test_median_ci_holds_the_median_and_narrows_with_samples():
    rng = np.random.default_rng(2)
    few, many = rng.normal(10, 1, 20), rng.normal(10, 1, 2000)
    lo_f, hi_f = median_ci(few)
    lo_m, hi_m = median_ci(many)
    assert lo_f <= np.median(few) <= hi_f and lo_m <= np.median(many) <= hi_m
    assert hi_m - lo_m < (hi_f - lo_f) / 4


def test_a_target_estimate_never_contradicts_the_host_measurement_beyond_the_peaks():
    """The detector's dynamic int8 ran 2.5x slower than fp32 on an AVX2 host (int8 peak 2x fp32)
    and was estimated faster than fp32 on a Pi 5 (4x): the floor keeps it at 2.5 x 2/4 = 1.25x
    fp32's estimate, while a static int8 as fast as fp32 here may still be 2x faster there."""
    from edgekit.devices import resolve
    from edgekit.optimizer.pipeline import Optimizer

    opt = SimpleNamespace(host=resolve("x86-avx2"), target=resolve("raspberrypi"))

    def outcome(precision, ms):
        return SimpleNamespace(candidate=SimpleNamespace(precision=precision, format="tflite"),
                               latency={"p50_ms": ms})

    fp32, dynamic, static = outcome("fp32", 0.02), outcome("int8-dynamic", 0.05), outcome("int8-static", 0.02)
    passing = [fp32, dynamic, static]
    level = 0.007  # the fitted model's fp32 estimate on the Pi
    assert np.isclose(Optimizer.measured_floor(opt, dynamic, passing, level), level * 2.5 / 2)
    assert np.isclose(Optimizer.measured_floor(opt, static, passing, level), level / 2)
    assert np.isclose(Optimizer.measured_floor(opt, fp32, passing, level), level)
    assert Optimizer.measured_floor(opt, dynamic, [dynamic, static], level) == 0.0  # no fp32 measured: no floor
    fp16 = outcome("fp16", 0.01)  # fp16 weights run as fp32 on the Pi: the fitted fp32 level is its
    assert np.isclose(Optimizer.measured_floor(opt, dynamic, passing + [fp16], level), level * 5 / 2)
