import numpy as np
import pytest

from edgekit.convert.onnx_export import ConversionError, export_onnx
from edgekit.models import load_model

torch = pytest.importorskip("torch")

from tests.conftest import BRANCHY  # noqa: E402


def test_dynamo_export_with_dynamic_batch(factory_file, tmp_path):
    import onnxruntime as ort

    model = load_model(f"{factory_file}:build", ["features:batchx6"])
    result = export_onnx(model, tmp_path / "net.onnx")
    assert result.exporter == "dynamo" and result.fallback_reason == ""
    assert result.max_abs_diff < 1e-5
    session = ort.InferenceSession(str(result.path))
    assert [o.name for o in session.get_outputs()] == ["output"]
    out = session.run(None, {"features": np.ones((5, 6), np.float32)})[0]
    assert out.shape == (5, 2)  # the batch dimension stayed dynamic


def test_fallback_to_torchscript_is_reported(tmp_path):
    path = tmp_path / "branchy.py"
    path.write_text(BRANCHY)
    model = load_model(f"{path}:build")
    result = export_onnx(model, tmp_path / "b.onnx")
    assert result.exporter == "torchscript"
    assert result.fallback_reason.startswith("dynamo:")


def test_failure_names_exporters_and_leaves_no_file(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(BRANCHY)
    model = load_model(f"{path}:bad")
    with pytest.raises(ConversionError) as info:
        export_onnx(model, tmp_path / "bad.onnx")
    message = str(info.value)
    assert "dynamo:" in message and "torchscript:" in message
    assert "linalg_svd" in message  # the failing op is named
    assert not (tmp_path / "bad.onnx").exists()
