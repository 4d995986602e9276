"""The report card's accuracy checks judge differences beyond chance: a one-row difference on a
small slice passes, a real regression on a slice of the same kind fails, and both numbers (the
drop and the paired test's p-value) are in the verdict."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.metrics import mcnemar_p
from tests.conftest import save_graph


def test_mcnemar_p_is_the_exact_one_sided_binomial_tail():
    assert mcnemar_p(0, 0) == 1.0  # the models never disagree
    assert mcnemar_p(1, 0) == 0.5  # one row: a coin flip
    assert mcnemar_p(10, 0) == pytest.approx(1 / 1024)
    assert mcnemar_p(0, 10) == 1.0  # the candidate is better: nothing to see
    assert mcnemar_p(5, 5) == pytest.approx(638 / 1024)


def _classifier(path, flip: float):
    """x[batch,3] -> logits = x[:, :2] + flip * x[:, 2] * [-2, 2]: with flip 1 the rows whose third
    feature is 1 change from class 0 to class 1; with flip 0 it is the baseline."""
    w = np.array([[1, 0], [0, 1], [-2 * flip, 2 * flip]], np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["logits"])], "clf",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
                              initializer=[numpy_helper.from_array(w, "W")])
    return save_graph(graph, path)


def _data(path, slices: dict[str, tuple[int, int]]):
    """Rows of class 0 the baseline gets right; per slice (rows, how many the candidate flips)."""
    x, groups = [], []
    for name, (rows, flipped) in slices.items():
        for i in range(rows):
            x.append([1.0, 0.0, 1.0 if i < flipped else 0.0])
            groups.append(name)
    np.savez(path, x=np.asarray(x, np.float32), labels=np.zeros(len(x), np.int64), group=np.asarray(groups))
    return path


@pytest.mark.parametrize("slices, passed, named", [
    ({"small": (22, 1), "big": (400, 0)}, True, "group=small"),  # 4.5 points on 22 rows is one row: chance
    ({"small": (22, 1), "big": (400, 20)}, False, "group=big"),  # 5 points on 400 rows is 20 rows: real
    ({"small": (22, 7), "big": (400, 0)}, False, "group=small"),  # 7 of 22 is no accident either
])
def test_a_slice_fails_only_on_a_drop_beyond_chance(tmp_path, slices, passed, named):
    from edgekit.testing.card import report_card

    base, cand = _classifier(tmp_path / "base.onnx", 0.0), _classifier(tmp_path / "cand.onnx", 1.0)
    data = _data(tmp_path / "eval.npz", slices)
    card = report_card(str(cand), str(base), data, slices=("group",), latency=False)
    check = next(c for c in card.checks if c.name == "worst slice")
    assert check.passed is passed and check.detail.startswith(named), check.detail
    assert "McNemar p = " in check.detail and "points on" in check.detail
    small = next(s for s in card.slices if s["slice"] == "group=small")
    assert small["regressed"] == slices["small"][1] and small["fixed"] == 0
    assert small["drop_points"] == pytest.approx(100 * slices["small"][1] / 22, abs=1e-3)


def test_the_overall_check_is_paired_too(tmp_path):
    from edgekit.testing.card import report_card

    base, cand = _classifier(tmp_path / "base.onnx", 0.0), _classifier(tmp_path / "cand.onnx", 1.0)
    one = report_card(str(cand), str(base), _data(tmp_path / "one.npz", {"all": (150, 1)}), latency=False)
    assert next(c for c in one.checks if c.name == "overall accuracy").passed  # 0.67 points, one row
    many = report_card(str(cand), str(base), _data(tmp_path / "many.npz", {"all": (150, 6)}), latency=False)
    check = next(c for c in many.checks if c.name == "overall accuracy")
    assert not check.passed and "6 rows regressed, 0 fixed" in check.detail


@pytest.mark.parametrize("labels, message", [(np.full(30, 7), "30 labels in"), (np.array([], np.int64), "holds no rows")])
def test_labels_outside_the_classes_and_empty_data_are_errors_not_a_pass(tmp_path, labels, message):
    """Labels of 7 for a 2-class model made every row wrong for both, and the card passed at 0%."""
    from edgekit.errors import DataError
    from edgekit.testing.card import report_card

    base = _classifier(tmp_path / "base.onnx", 0.0)
    np.savez(tmp_path / "d.npz", x=np.ones((len(labels), 3), np.float32), labels=labels)
    with pytest.raises(DataError, match=message):
        report_card(str(base), str(base), tmp_path / "d.npz", latency=False)
