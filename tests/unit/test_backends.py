import numpy as np
import pytest

from edgekit.backends import SessionOptions
from edgekit.formats import open_session
from edgekit.backends.litert import _from_output, _to_input
from edgekit.errors import EdgekitError


def test_onnxruntime_session_reads_back_its_provider(tiny_onnx):
    session = open_session(tiny_onnx, SessionOptions(threads=1))
    assert session.active_provider == "cpu" and not session.fell_back
    out = session.run({"x": np.ones((3, 4), np.float64)})[0]  # cast to the model's float32
    assert out.shape == (3, 3)
    assert session.run_batched({"x": np.ones((70, 4), np.float32)}, batch_size=32)[0].shape == (70, 3)


def test_cuda_request_without_a_gpu_is_detected(tiny_onnx):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("GPU: one is present, and this tests the machine without")
    session = open_session(tiny_onnx, SessionOptions(provider="cuda"))
    assert session.requested_provider == "cuda" and session.active_provider == "cpu" and session.fell_back
    with pytest.raises(EdgekitError, match="unknown onnxruntime provider"):
        open_session(tiny_onnx, SessionOptions(provider="opencl"))


def test_litert_session_runs_fixed_batch_models_row_by_row(tiny_tflite):
    session = open_session(tiny_tflite)
    assert session.fixed_batch and session.active_provider == "xnnpack"
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    batched = session.run({session.inputs[0].name: x})[0]
    single = np.concatenate([session.run({session.inputs[0].name: x[i:i + 1]})[0] for i in range(5)])
    assert batched.shape == (5, 10) and np.allclose(batched, single)


def test_int8_io_is_quantised_and_dequantised():
    detail = {"dtype": np.int8, "quantization": (0.5, -10)}
    q = _to_input(np.array([0.0, 1.0, 100.0], np.float32), detail)
    assert q.dtype == np.int8 and q.tolist() == [-10, -8, 127]  # clipped at the int8 range
    assert _from_output(np.array([-10, -8], np.int8), detail).tolist() == [0.0, 1.0]
    ids = _to_input(np.array([1, 2], np.int64), {"dtype": np.int32, "quantization": (0.0, 0)})
    assert ids.dtype == np.int32
