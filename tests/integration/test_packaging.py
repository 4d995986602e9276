"""The wheel ships the profiles, and the Raspberry Pi kit installs and runs without torch."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "targets" / "raspberrypi"
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_wheel_contains_profiles_and_data(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, timeout=300)
    wheel = next(tmp_path.glob("edgekit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(p).name for p in (ROOT / "profiles").glob("*.toml")}
    packaged = {Path(n).name for n in names if n.startswith("edgekit/profiles/") and n.endswith(".toml")}
    assert shipped and shipped == packaged
    assert "edgekit/zoo/sentences.txt" in names and "edgekit/monitor/templates/report.html" in names
    sources = {f"edgekit/{p.relative_to(ROOT / 'toolkit' / 'edgekit')}" for p in (ROOT / "toolkit" / "edgekit").rglob("*.py")}
    assert sources - set(names) == set(), "pyproject's package list misses a subpackage"


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory):
    """A runtime-only install made by the kit's install.sh, as on a Pi, with both runtimes: the Pi
    plan's winner may be a TFLite or an ONNX variant (make test-arm64 installs LiteRT alone)."""
    venv = tmp_path_factory.mktemp("pi") / "venv"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    out = subprocess.run(["bash", str(KIT / "install.sh"), "--venv", str(venv), "--python", sys.executable,
                          "--onnxruntime"],
                         capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    return venv


@pytest.fixture(scope="module")
def digits_bundle(tmp_path_factory):
    """An optimised digits model for the Pi, packaged: what a user copies to the device."""
    pytest.importorskip("torch")
    from edgekit import optimize
    from edgekit.bundle import make_bundle

    out = tmp_path_factory.mktemp("digits")
    optimize("edgekit:digits-cnn", target="raspberrypi", out=out / "opt", timing_s=0.5)
    make_bundle(out / "opt", out / "digits.ekb")
    return out / "digits.ekb"


def test_device_install_has_no_torch_and_finds_profiles(device_venv):
    python = device_venv / "bin" / "python"
    for toolkit in ("torch", "onnx"):  # the device carries no toolkit (onnxruntime runs, onnx builds)
        assert subprocess.run([str(python), "-c", f"import {toolkit}"], capture_output=True).returncode != 0
    listed = subprocess.run([str(device_venv / "bin" / "edgekit"), "targets", "list"],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "raspberrypi5" in listed.stdout


def test_example_app_classifies_real_digits(device_venv, digits_bundle):
    python = str(device_venv / "bin" / "python")
    out = subprocess.run([python, str(KIT / "app.py"), str(digits_bundle), "--input", str(KIT / "sample_digits.npz"),
                          "--runs", "5"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    accuracy = float(out.stdout.split("accuracy: ")[1].split()[0])
    assert accuracy > 0.9, out.stdout
    # the bundle's first variant (the winner the Pi plan chose on estimates, which scale noisy host
    # timings, so which format wins is not fixed) runs, and nothing fell back
    from edgekit.bundle import read_manifest

    first = read_manifest(digits_bundle).variants[0].id
    assert f"active variant: {first}; fallbacks: 0" in out.stdout, out.stdout
    assert "latency (batch 1" in out.stdout
    missing = subprocess.run([python, str(KIT / "app.py"), "/nonexistent.ekb"], capture_output=True, text=True)
    assert missing.returncode == 1 and "does not exist" in missing.stderr


@pytest.fixture(scope="module")
def tflite_runtime_venv(tmp_path_factory):
    """A device-like environment with the real tflite_runtime package (no ai-edge-litert, no
    torch): older Pi images ship it, and its API is not LiteRT's."""
    venv = tmp_path_factory.mktemp("tflrt") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          "numpy<2", "msgspec", "tflite-runtime"], capture_output=True, text=True, timeout=900)  # the core; tflite-runtime is built on NumPy 1
    if out.returncode != 0:
        pytest.skip(f"the real tflite-runtime package does not install here: {out.stderr.strip()[-300:]}")
    return venv


def test_runtime_on_the_real_tflite_runtime_package(tflite_runtime_venv, tiny_tflite, tmp_path):
    import json

    import numpy as np

    from edgekit.bundle import make_bundle, sha256_file
    from edgekit.runtime import load

    opt = tmp_path / "opt"
    (opt / "artifacts").mkdir(parents=True)
    (opt / "artifacts" / "tiny.tflite").write_bytes(tiny_tflite.read_bytes())
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    (opt / "manifest.json").write_text(json.dumps({
        "schema_version": 2, "model": {"name": "tiny", "version": "1"},
        "inputs": [{"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": [1, 10], "dtype": "float32"}],
        "variants": [{"id": "tflite-fp32", "file": "artifacts/tiny.tflite", "format": "tflite", "precision": "fp32",
                      "sha256": sha256_file(opt / "artifacts" / "tiny.tflite"), "runtime": "litert"}]}))
    bundle = tmp_path / "tiny.ekb"
    make_bundle(opt, bundle)
    np.save(tmp_path / "x.npy", x)
    expected = load(bundle).predict({"input": x})["logits"]  # ai-edge-litert, in this environment
    code = ("import sys, json, numpy as np\n"
            "from edgekit.runtime import load\n"
            f"m = load({str(bundle)!r})\n"
            f"out = m.predict({{'input': np.load({str(tmp_path / 'x.npy')!r})}})['logits']\n"
            "mods = sorted(k for k in sys.modules if k.split('.')[0] in ('ai_edge_litert', 'tflite_runtime', 'torch'))\n"
            "print(json.dumps({'out': out.tolist(), 'stats': m.stats()['variants'], 'modules': mods}))\n")
    env = {"PYTHONPATH": str(ROOT / "toolkit"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([str(tflite_runtime_venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["stats"][0]["loaded"] and not result["stats"][0]["skipped"]
    assert {m.split(".")[0] for m in result["modules"]} == {"tflite_runtime"}
    assert np.allclose(result["out"], expected, atol=1e-5)


def test_inspect_reads_a_bundle_as_the_device_would(bundles):
    """`edgekit inspect BUNDLE` shows the manifest (it called a bundle a broken ONNX file)."""
    digits, _ = bundles
    cli = [sys.executable, "-m", "edgekit", "inspect", str(digits)]
    plain = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert "digits-cnn" in plain.stdout and "onnx-fp32" in plain.stdout and "Interface" in plain.stdout
    data = json.loads(subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=120, check=True).stdout)
    assert data["model"]["name"] == "digits-cnn" and [v["id"] for v in data["variants"]][0] in plain.stdout
