"""The wheel ships the profiles, and the Raspberry Pi kit installs and runs without torch."""

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
    assert "edgekit/zoo/sentences.txt" in names
    sources = {f"edgekit/{p.relative_to(ROOT / 'toolkit' / 'edgekit')}" for p in (ROOT / "toolkit" / "edgekit").rglob("*.py")}
    assert sources - set(names) == set(), "pyproject's package list misses a subpackage"


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory):
    """A runtime-only install made by the kit's install.sh, as on a Pi."""
    venv = tmp_path_factory.mktemp("pi") / "venv"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    out = subprocess.run(["bash", str(KIT / "install.sh"), "--venv", str(venv), "--python", sys.executable],
                         capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    return venv


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    pytest.importorskip("torch")
    from edgekit.convert.onnx_export import export_onnx
    from edgekit.models import load_model

    out = tmp_path_factory.mktemp("digits")
    model = load_model("edgekit:digits-cnn")
    onnx_path = export_onnx(model, out / "digits.onnx").path
    tflite_path = None
    try:
        import litert_torch

        tflite_path = out / "digits.tflite"
        litert_torch.convert(model.module, model.example_inputs).export(str(tflite_path))
    except ImportError:
        pass
    return onnx_path, tflite_path


def test_device_install_has_no_torch_and_finds_profiles(device_venv):
    python = device_venv / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode != 0
    listed = subprocess.run([str(device_venv / "bin" / "edgekit"), "targets", "list"],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "raspberrypi5" in listed.stdout


def test_example_app_classifies_real_digits(device_venv, digits_files):
    onnx_path, tflite_path = digits_files
    python = str(device_venv / "bin" / "python")
    for path in filter(None, (onnx_path, tflite_path)):
        out = subprocess.run([python, str(KIT / "app.py"), str(path), "--input", str(KIT / "sample_digits.npz"),
                              "--runs", "5"], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        accuracy = float(out.stdout.split("accuracy: ")[1].split()[0])
        assert accuracy > 0.9, out.stdout
        assert "latency (batch 1" in out.stdout
    missing = subprocess.run([python, str(KIT / "app.py"), "/nonexistent.onnx"], capture_output=True, text=True)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
