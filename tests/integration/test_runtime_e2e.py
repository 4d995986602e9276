"""The bundle and runtime on the real digits model: optimize --package, edgekit run."""

import json

import numpy as np
import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("torch")


def test_optimize_package_and_run(cli, tmp_path):
    out = tmp_path / "digits"
    result = cli("optimize", "--target", "raspberrypi", "--out", out, "--package", "--timing-seconds", "1")
    assert result.exit_code == 0, result.output
    bundle = out.with_suffix(".ekb")
    assert bundle.exists()
    ran = cli("run", bundle, "--json")
    assert ran.exit_code == 0, ran.output
    info = json.loads(ran.output)
    assert info["active_variant"] and info["outputs"]["logits"]["shape"][1] == 10

    from edgekit.runtime import load

    model = load(bundle, cache_size=16)
    data = np.load("targets/raspberrypi/sample_digits.npz")
    predicted = model.predict({"input": data["input"]})["logits"].argmax(1)
    assert (predicted == data["labels"]).mean() > 0.9
    assert model.stats()["variants"][0]["provider"] in ("xnnpack", "cpu")


def test_package_cli_signs_and_run_verifies(cli, tmp_path):
    pytest.importorskip("cryptography")
    from edgekit import optimize

    optimize("edgekit:digits-cnn", target="host", out=tmp_path / "o", formats={"onnx"}, timing_s=0.5)
    key = tmp_path / "release.key"
    assert cli("package", "--new-key", key).exit_code == 0
    signed = tmp_path / "d.ekb"
    assert cli("package", tmp_path / "o", "--out", signed, "--sign-key", key).exit_code == 0
    ok = cli("run", signed, "--public-key", f"{key}.pub")
    assert ok.exit_code == 0, ok.output
    np.save(tmp_path / "bad.npy", np.ones((1, 8, 8), np.float32))
    bad = cli("run", signed, "--input", tmp_path / "bad.npy")
    assert bad.exit_code == 1 and "input 'input' has shape 1x8x8, expected batchx1x8x8" in bad.output
