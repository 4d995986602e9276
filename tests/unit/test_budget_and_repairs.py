"""The whole-run time budget, the repair loop's stop rule, and the guard's probability metrics."""

import numpy as np
import pytest

from edgekit.optimizer.accuracy import Tolerance, compare, shortfall, verdict
from edgekit.optimizer.budget import Budget
from edgekit.optimizer.repair import progressing


def test_budget_records_what_it_left_out():
    free = Budget(None)
    assert not free.spent() and free.share(20) == 20
    spent = Budget(0.0)
    assert spent.spent()
    reason = spent.skip("building onnx-int8-static")
    assert "--time-budget of 0 s ran out" in reason
    assert spent.to_dict()["skipped"] == ["building onnx-int8-static"]
    assert spent.share(20) == pytest.approx(0.3)  # every candidate is still timed a little


def test_repairs_stop_when_they_close_almost_none_of_the_gap():
    assert progressing([0.1, 0.09])  # too few tries to judge
    assert progressing([0.1, 0.08, 0.05, 0.02])  # closing the gap
    assert not progressing([0.1, 0.099, 0.098, 0.097])  # 3% of the gap in three tries
    assert progressing([float("inf"), 0.5, 0.5, 0.5])  # from non-finite outputs anything is progress


def test_one_number_per_sample_is_compared_as_one_vector():
    ref = np.array([[0.9], [0.1], [0.8], [0.05]], np.float32)
    near = ref + np.array([[0.01], [-0.01], [0.0], [0.01]], np.float32)
    flipped = ref[::-1].copy()
    assert compare([ref], [near], None, "generic")["cosine_mean"] > 0.999
    # per row, each 1-element cosine would be 1.0 for both; over the samples the flip shows
    assert compare([ref], [flipped], None, "generic")["cosine_mean"] < 0.6


def test_max_abs_and_iou_tolerances():
    tol = Tolerance.parse("cosine=0.9,max_abs=0.02,iou=0.8,threshold=0.3")
    assert tol.max_abs == 0.02 and tol.min_iou == 0.8 and tol.threshold == 0.3
    ref = np.zeros((2, 1, 8, 8), np.float32)
    ref[:, :, 2:6, 2:6] = 0.9
    shifted = np.zeros_like(ref)
    shifted[:, :, 2:6, 3:7] = 0.9
    metrics = compare([ref], [shifted], None, "generic", threshold=0.3)
    assert metrics["iou"] == pytest.approx(12 / 20)
    ok, why = verdict(metrics, tol)
    assert not ok and "IoU above 0.3 0.6000 < 0.8" in why and "max |diff| 0.9 > 0.02" in why
    assert shortfall(metrics, tol) > shortfall(compare([ref], [ref], None, "generic", threshold=0.3), tol) == 0
    with pytest.raises(Exception, match="iou=0.85"):
        Tolerance.parse("iou")


def test_a_bounded_step_returns_raises_and_is_stopped_with_what_it_started(tmp_path):
    import os
    import subprocess
    import time

    from edgekit.errors import ConversionError, MissingDependencyError
    from edgekit.optimizer.child import Stopped, bounded

    assert bounded("sum", lambda: {"pid": os.getpid()}, 30)["pid"] != os.getpid()  # ran in a child
    assert bounded("sum", lambda: os.getpid(), None) == os.getpid()  # no budget: no fork

    def fails():
        raise ConversionError("onnx2tf failed: bad op", "onnx2tf", detail="trace", hint="try --formats onnx")

    with pytest.raises(ConversionError) as caught:
        bounded("convert", fails, 30)
    assert (caught.value.exporter, caught.value.detail, caught.value.hint) == ("onnx2tf", "trace", "try --formats onnx")

    def missing():
        raise MissingDependencyError("onnx2tf", "tflite", "TFLite from ONNX")

    with pytest.raises(MissingDependencyError):  # an install hint stays an install hint
        bounded("convert", missing, 30)

    pid_file = tmp_path / "grandchild"

    def hangs():  # a converter that starts its own process and never ends
        pid_file.write_text(f"{os.getpid()} {subprocess.Popen(['sleep', '600']).pid}")
        time.sleep(600)

    with pytest.raises(Stopped, match="stopped after 2 s"):
        bounded("the tflite conversion", hangs, 2)
    time.sleep(0.2)
    for pid in pid_file.read_text().split():  # the child and what it started: killed with its group
        state = subprocess.run(["ps", "-o", "stat=", "-p", pid], capture_output=True, text=True).stdout
        assert state.strip() in ("", "Z"), (pid, state)  # (a zombie until reaped)
    with pytest.raises(Stopped, match="not started"):
        bounded("convert", lambda: 1, 0)
