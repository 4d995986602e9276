import numpy as np
import pytest

from edgekit.data import Dataset, load_data, synthesize
from edgekit.errors import DataError
from edgekit.models import load_model


def test_npz_round_trip(tiny_onnx, tmp_path):
    model = load_model(str(tiny_onnx))
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((10, 4), np.float64), labels=np.arange(10))
    data = load_data(str(path), model)
    assert len(data) == 10 and data.arrays["x"].dtype == np.float32  # float64 cast safely
    assert data.labels is not None and len(list(data.batches(4))) == 3
    assert data.get_next()["x"].shape == (1, 4)  # onnxruntime's CalibrationDataReader protocol


@pytest.mark.parametrize("arrays, message", [
    ({"y": np.ones((2, 4), np.float32)}, "missing input x; unknown array y"),
    ({"x": np.ones((2, 5), np.float32)}, "data input 'x' has samples of shape \\(5,\\)"),
    ({"x": np.ones((2, 4), np.complex64)}, "is complex64, the model expects float32"),
])
def test_mismatches_are_named(tiny_onnx, tmp_path, arrays, message):
    model = load_model(str(tiny_onnx))
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_data(str(path), model)


def test_bad_files(tiny_onnx, tmp_path):
    model = load_model(str(tiny_onnx))
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "none.npz"), model)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_data(str(bad), model)
    with pytest.raises(DataError, match="different sample counts"):
        Dataset({"a": np.ones(3), "b": np.ones(4)})
    with pytest.raises(DataError, match="2 labels for 3 samples"):
        Dataset({"a": np.ones(3)}, labels=np.ones(2))


def test_factory_data(factory_file):
    model = load_model(f"{factory_file}:build")
    data = load_data(f"{factory_file}:data", model)
    assert len(data) == 12 and data.source.endswith(":data")
    with pytest.raises(DataError, match="yielded str"):
        load_data(f"{factory_file}:wrong_type", model)


def test_synthetic_inputs_follow_the_spec(tiny_onnx):
    data = synthesize(load_model(str(tiny_onnx)), n=5)
    assert data.synthetic and data.arrays["x"].shape == (5, 4)
    assert "synthetic" in data.describe()
