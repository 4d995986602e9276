"""The install a device carries: a core without the toolkit, runtimes by extra, and a clear line
when a device install reaches for the toolkit (test_packaging builds the wheel and installs it)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_core_install_is_what_a_device_needs():
    """A LiteRT Raspberry Pi carried onnx and onnxruntime it never imports: the core is numpy, msgspec and
    the device's CLI; runtimes and the toolkit come by extra."""
    core = {d.split(">")[0].split(";")[0].strip() for d in PYPROJECT["project"]["dependencies"]}
    assert core == {"numpy", "msgspec", "click", "rich", "tomli"}
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert extras["litert"] == ["ai-edge-litert>=1.2"] and extras["onnxruntime"] == ["onnxruntime>=1.18"]
    assert {"onnx>=1.16", "onnxruntime>=1.18"} <= set(extras["optimize"])
    assert "optimize" in extras["all"][0]


def test_a_device_install_reaching_for_the_toolkit_says_which_extra(cli, tiny_onnx, monkeypatch):
    """`edgekit inspect model.onnx` on a LiteRT device install printed "unexpected
    ModuleNotFoundError: No module named 'onnx'"; it names the package and the extra now."""
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx fails as on a device install
    result = cli("inspect", str(tiny_onnx))
    assert result.exit_code == 1
    assert "needs the Python package 'onnx'" in result.output and "edgekit[optimize]" in result.output
