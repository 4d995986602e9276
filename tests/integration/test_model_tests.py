"""Model tests on the real digits model: memorisation, hard cases, regression and the report card.
Each test is built to catch its bug: a frozen layer, shuffled labels, a degraded class."""

import json
import tarfile

import numpy as np
import pytest

pytest.importorskip("torch")
pytestmark = [pytest.mark.integration, pytest.mark.slow]

NETS = '''
import torch
from edgekit.zoo.digits import build_module

def digits():
    return build_module().eval(), (torch.zeros(1, 1, 8, 8),)

def frozen():
    m = build_module()
    m[0].weight.requires_grad_(False)  # a frozen first convolution
    return m.eval(), (torch.zeros(1, 1, 8, 8),)

class Detached(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = build_module()

    def forward(self, input):
        return self.body[-1](self.body[:-1](input).detach())  # the graph is cut: only the head learns

def detached():
    return Detached().eval(), (torch.zeros(1, 1, 8, 8),)

def train_cnn(columns, labels):
    # a training hook: the digits CNN trained from scratch on what it is given
    torch.manual_seed(0)
    m = build_module()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    x, y = torch.from_numpy(columns["input"]), torch.from_numpy(labels)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    return m.eval()

def train_brightness(columns, labels):
    # a model too small for the task: one feature (how much ink), nearest class mean, as a callable
    import numpy as np
    ink = columns["input"].reshape(len(labels), -1).mean(1)
    means = np.array([ink[labels == c].mean() for c in range(10)])
    return lambda cols: -np.abs(cols["input"].reshape(len(cols["input"]), -1).mean(1)[:, None] - means)
'''


@pytest.fixture(scope="module")
def digits_data(tmp_path_factory):
    from edgekit.zoo import digits

    x_train, x_test, y_train, y_test = digits._split()
    d = tmp_path_factory.mktemp("mt")
    np.savez(d / "train.npz", input=x_train, labels=y_train)
    devices = np.asarray([f"pi-{i % 3}" for i in range(len(x_test))])
    np.savez(d / "eval.npz", input=x_test, labels=y_test, device=devices)
    shuffled = np.random.default_rng(0).permutation(y_train)
    np.savez(d / "shuffled.npz", input=x_train, labels=shuffled)
    (d / "nets.py").write_text(NETS)
    return d


@pytest.mark.parametrize("factory, data, passed, reason", [
    ("digits", "train.npz", True, None),
    ("frozen", "train.npz", False, "parameter(s) never changed (0.weight)"),
    ("detached", "train.npz", False, "cannot memorise a batch"),
    ("digits", "shuffled.npz", False, "labels may not match the inputs"),
])
def test_memorisation_catches_frozen_layers_cut_graphs_and_shuffled_labels(digits_data, factory, data, passed,
                                                                            reason, cli):
    result = cli("test", "memorize", f"{digits_data / 'nets.py'}:{factory}", "--data", digits_data / data,
                 "--out", digits_data / f"mem-{factory}-{data}", "--json")
    info = json.loads(result.output)
    assert info["passed"] is passed and result.exit_code == (0 if passed else 1), result.output
    if reason:
        assert any(reason in r for r in info["reasons"]), info["reasons"]
    assert (digits_data / f"mem-{factory}-{data}" / "memorize_loss.png").is_file()


def test_memorisation_refuses_labels_that_are_not_classes(digits_data, cli):
    with np.load(digits_data / "train.npz") as npz:
        np.savez(digits_data / "out-of-range.npz", input=npz["input"], labels=npz["labels"] + 10)
    result = cli("test", "memorize", f"{digits_data / 'nets.py'}:digits", "--data", digits_data / "out-of-range.npz")
    assert result.exit_code == 1 and "are not classes of" in result.output and "unexpected" not in result.output


@pytest.fixture(scope="module")
def degraded(bundles, tmp_path_factory):
    """The served digits bundle's fp32 ONNX, and a copy whose class-3 output weights are damaged
    (shrunk, with noise): class 3 is recognised less often, every other class as before."""
    import onnx
    from onnx import numpy_helper

    d = tmp_path_factory.mktemp("degraded")
    with tarfile.open(bundles[0]) as tar:
        tar.extractall(d / "bundle", filter="data")
    manifest = json.loads((d / "bundle" / "manifest.json").read_text())
    source = d / "bundle" / next(v["file"] for v in manifest["variants"] if v["precision"] == "fp32")
    proto = onnx.load(str(source))
    head = next(t for t in proto.graph.initializer if list(t.dims) in ([10, 64], [64, 10]))
    w = numpy_helper.to_array(head).copy()
    rng = np.random.default_rng(3)
    row = w[3] if w.shape == (10, 64) else w[:, 3]
    row[:] = 0.3 * row + rng.normal(0, 0.1 * np.abs(row).mean(), 64).astype(np.float32)
    head.CopyFrom(numpy_helper.from_array(w, head.name))
    onnx.save(proto, str(d / "degraded.onnx"))
    return source, d / "degraded.onnx"


def test_hard_cases_and_regression_suite(degraded, digits_data, tmp_path, cli):
    good, bad = degraded
    # the examples the new version (bad) finds hard, and those it lost against the old one (good)
    result = cli("test", "hardcases", bad, "--data", digits_data / "eval.npz", "--top", "40", "--baseline", good,
                 "--out", tmp_path / "hard.npz", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert set(info["by_criterion"]) == {"highest loss", "largest loss increase over the baseline"}
    suite = np.load(tmp_path / "hard.npz")
    assert {"input", "labels", "source_index", "score", "why"} <= set(suite.files)
    assert len(suite["labels"]) == info["examples"] <= 80
    same = cli("test", "regression", good, "--baseline", good, "--suite", tmp_path / "hard.npz")
    assert same.exit_code == 0, same.output
    worse = cli("test", "regression", bad, "--baseline", good, "--suite", tmp_path / "hard.npz", "--json")
    report = json.loads(worse.output)
    assert worse.exit_code == 1 and report["regressions"] and not report["passed"]
    assert 3 in {r["label"] for r in report["regressions"]} | {r["predicted"] for r in report["regressions"]}
    assert all(3 in (r["label"], r["predicted"]) for r in report["regressions"])  # what broke is class 3


def test_report_card_fails_the_degraded_class_while_overall_barely_moves(degraded, digits_data, tmp_path, cli):
    good, bad = degraded
    result = cli("test", "card", bad, "--baseline", good, "--data", digits_data / "eval.npz",
                 "--slices", "class,device", "--out", tmp_path / "card", "--json")
    card = json.loads(result.output)
    assert result.exit_code == 1 and card["passed"] is False
    worst = card["slices"][0]
    assert worst["slice"] == "class=3" and worst["drop_points"] > 10
    overall_drop = 100 * (card["overall"]["baseline"]["accuracy"] - card["overall"]["candidate"]["accuracy"])
    assert overall_drop < worst["drop_points"] / 4  # the average hides it; the slice does not
    failed = {c["name"] for c in card["checks"] if not c["passed"]}
    assert "worst slice" in failed
    assert card["latency"]["candidate_p50_ms"] > 0 and card["latency"]["baseline_p50_ms"] > 0  # both measured
    for name in ("report.md", "report.json", "slices.png", "confusion.png", "calibration.png"):
        assert (tmp_path / "card" / name).is_file()
    assert "class=3" in (tmp_path / "card" / "report.md").read_text()
    same = cli("test", "card", good, "--baseline", good, "--data", digits_data / "eval.npz", "--slices", "class")
    assert same.exit_code == 0, same.output


def test_diagnosis_names_over_fitting_and_shift_with_numbers(degraded, digits_data, tmp_path):
    from edgekit.testing.card import report_card

    good, _ = degraded
    with np.load(digits_data / "eval.npz") as npz:
        x, y = npz["input"], npz["labels"]
    rotated = np.ascontiguousarray(np.rot90(x, 1, axes=(2, 3)))  # the same digits, turned: a shifted world
    np.savez(tmp_path / "recent.npz", input=rotated, labels=y)
    card = report_card(str(good), str(good), digits_data / "eval.npz", train=digits_data / "train.npz",
                       val=digits_data / "eval.npz", recent=tmp_path / "recent.npz", latency=False)
    findings = {d["finding"]: d for d in card.diagnosis}
    assert "distribution shift" in findings and findings["distribution shift"]["numbers"]["recent"] < 0.6
    assert "under-fitting" not in findings


def test_learning_curve_says_more_data_or_a_bigger_model(degraded, digits_data, tmp_path, cli):
    """From a handful of rows per class the CNN still gains from every doubling (data-limited); a
    one-feature model has flattened at a low accuracy whatever the data (model-limited)."""
    good, _ = degraded
    common = [good, "--baseline", good, "--data", digits_data / "eval.npz", "--train", digits_data / "train.npz",
              "--val", digits_data / "eval.npz", "--no-latency", "--json"]
    small = cli("test", "card", *common, "--train-hook", f"{digits_data / 'nets.py'}:train_cnn",
                "--fractions", "0.02,0.05", "--out", tmp_path / "card")
    card = json.loads(small.output)
    curve = card["learning_curve"]
    assert [p["rows"] for p in curve] == [30, 70] and curve[1]["validation_accuracy"] > curve[0]["validation_accuracy"]
    findings = {d["finding"] for d in card["diagnosis"]}
    assert "data-limited" in findings and "model-limited" not in findings
    assert (tmp_path / "card" / "learning_curve.png").is_file()
    assert "## Learning curve" in (tmp_path / "card" / "report.md").read_text()
    tiny = cli("test", "card", *common, "--train-hook", f"{digits_data / 'nets.py'}:train_brightness",
               "--fractions", "0.25,0.5,1")
    card = json.loads(tiny.output)
    verdict = next(d for d in card["diagnosis"] if d["finding"] in ("data-limited", "model-limited", "plateau"))
    assert verdict["finding"] == "model-limited" and verdict["numbers"]["train@100%"] < 0.5
    no_val = cli("test", "card", good, "--baseline", good, "--data", digits_data / "eval.npz", "--no-latency",
                 "--train", digits_data / "train.npz", "--train-hook", f"{digits_data / 'nets.py'}:train_cnn")
    assert no_val.exit_code != 0 and "needs --train and --val" in no_val.output


def test_report_card_on_minilm_embeddings(bundles, tmp_path, cli):
    """Embeddings have no labels: the card judges agreement with the baseline on the shipped
    sentences. The packaged int8 MiniLM agrees with the fp32 PyTorch model; a copy with a damaged
    layer norm does not."""
    pytest.importorskip("tokenizers")
    import onnx
    from onnx import numpy_helper

    from edgekit.zoo import minilm

    np.savez(tmp_path / "sentences.npz", **minilm.tokenize(minilm.sentences()))
    good = cli("test", "card", bundles[1], "--baseline", "edgekit:minilm", "--data", tmp_path / "sentences.npz",
               "--out", tmp_path / "card", "--json")
    card = json.loads(good.output)
    assert good.exit_code == 0 and card["task"] == "embedding" and card["overall"]["cosine_mean"] > 0.99, good.output
    assert (tmp_path / "card" / "report.md").is_file()
    proto = onnx.load(str(bundles[1].parent / "minilm" / "best.onnx"))
    weight = next(t for t in proto.graph.initializer if t.name == "layers.0.attn_norm.weight")
    w = numpy_helper.to_array(weight) * np.random.default_rng(0).uniform(-1, 1, 384).astype(np.float32)
    weight.CopyFrom(numpy_helper.from_array(w, weight.name))
    onnx.save(proto, str(tmp_path / "damaged.onnx"))
    bad = cli("test", "card", tmp_path / "damaged.onnx", "--baseline", "edgekit:minilm",
              "--data", tmp_path / "sentences.npz", "--json")
    card = json.loads(bad.output)
    assert bad.exit_code == 1 and card["overall"]["cosine_mean"] < 0.99, card["overall"]
    assert [c["name"] for c in card["checks"] if not c["passed"]] == ["agreement with the baseline"]


def test_memorisation_reads_the_bundles_input_names_not_only_input(digits_data):
    """The loop's gate broke on any model whose input is not named `input`: train.npz holds the
    bundle's names (here `x`, `y`), the factory's one input is `input`. A lone array, the bundle's
    positional names, or a mapping (loop.toml: [gate] inputs) reads them; a wrong mapping says how."""
    from edgekit.errors import DataError
    from edgekit.testing.memorize import memorize

    with np.load(digits_data / "train.npz") as npz:
        np.savez(digits_data / "x.npz", x=npz["input"], labels=npz["labels"])
        np.savez(digits_data / "xy.npz", x=npz["input"], y=npz["input"], labels=npz["labels"])
    factory = f"{digits_data / 'nets.py'}:digits"
    assert memorize(factory, digits_data / "x.npz", steps=60).passed  # the lone array
    assert memorize(factory, digits_data / "xy.npz", steps=60, positional=("y",)).passed
    assert memorize(factory, digits_data / "xy.npz", steps=60, columns_of={"input": "x"}).passed
    with pytest.raises(DataError, match=r"has no array 'input' for .* \(its arrays are x, y, labels\)") as caught:
        memorize(factory, digits_data / "xy.npz", steps=60)
    assert "[gate] inputs" in caught.value.hint
    with pytest.raises(DataError, match=r"has no array 'z' \(for input 'input'\)"):  # a mapping to nothing
        memorize(factory, digits_data / "xy.npz", steps=60, columns_of={"input": "z"})
