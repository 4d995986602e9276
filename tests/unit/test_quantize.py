"""Each converter and quantiser on tiny models: op types, initializer dtypes, closeness to fp32."""


import numpy as np
import onnx
import pytest

from edgekit.formats import open_session
from edgekit.data import Dataset
from edgekit.models import load_model
from edgekit.optimizer.accuracy import compare

MLP = '''
import torch
def cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval(), (torch.randn(1, 3, 8, 8),)
'''


def make_mlp_onnx(path, seed=0, batch="batch"):
    """input[batch,16] -> MatMul+Add -> Relu -> MatMul+Add -> [batch,8], with onnx.helper (no torch)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)
             for name, shape in (("W1", (16, 32)), ("b1", (32,)), ("W2", (32, 8)), ("b2", (8,)))]
    nodes = [helper.make_node("MatMul", ["input", "W1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["z"]),
             helper.make_node("Relu", ["z"], ["r"]), helper.make_node("MatMul", ["r", "W2"], ["o"]),
             helper.make_node("Add", ["o", "b2"], ["output"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 8])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Source graphs built in code; the reference is onnxruntime on the fp32 source itself."""
    from tests.conftest import make_cnn_onnx

    d = tmp_path_factory.mktemp("q")
    mlp, cnn = load_model(str(make_mlp_onnx(d / "mlp.onnx"))), load_model(str(make_cnn_onnx(d / "cnn.onnx")))
    rng = np.random.default_rng(0)
    data = {"mlp": Dataset({"input": rng.standard_normal((64, 16)).astype(np.float32)}),
            "cnn": Dataset({"input": rng.standard_normal((64, 3, 8, 8)).astype(np.float32)})}
    return d, {"mlp": mlp, "cnn": cnn}, data


def _reference(model, data):
    if model.is_torch:
        import torch

        with torch.no_grad():
            return [model.module(torch.from_numpy(data.arrays["input"])).numpy()]
    return open_session(model.path, model=model).run_batched(data.arrays)


def _close(model, data, path, min_cos=0.99):
    out = open_session(path, model=model).run_batched(data.arrays)
    metrics = compare(_reference(model, data), out, None, "generic")
    assert metrics["cosine_mean"] >= min_cos, metrics
    return metrics


def _init_dtypes(path):
    proto = onnx.load(str(path))
    return {onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in proto.graph.initializer}, \
        [n.op_type for n in proto.graph.node]


def host_int8(mode: str):
    """The int8 settings the planner chooses for this machine's CPU (U8S8 with reduce_range on
    AVX2 without VNNI, where full-range weights saturate VPMADDUBSW): accuracy is judged on what
    edgekit would really build here, so the same bound holds on every CPU."""
    from edgekit.devices import host_profile
    from edgekit.optimizer.recipes.onnx import int8_preset

    return int8_preset(host_profile(), mode)[0]


def test_onnx_dynamic_int8(models, tmp_path):
    from edgekit.quantize.onnx_int8 import quantize_onnx_int8

    d, m, data = models
    info = quantize_onnx_int8(d / "mlp.onnx", tmp_path / "dyn.onnx", host_int8("dynamic"))
    dtypes, ops = _init_dtypes(tmp_path / "dyn.onnx")
    assert "int8" in dtypes and ("MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops)
    assert info["quantized_ops"] >= 2 and "per-channel" in info["label"]
    _close(m["mlp"], data["mlp"], tmp_path / "dyn.onnx")


@pytest.mark.parametrize("calibration", ["minmax", "entropy", "percentile"])
def test_onnx_static_qdq(models, tmp_path, calibration):
    from dataclasses import replace

    from edgekit.quantize.onnx_int8 import quantize_onnx_int8

    d, m, data = models
    settings = replace(host_int8("static"), calibration=calibration)
    quantize_onnx_int8(d / "cnn.onnx", tmp_path / "s.onnx", settings, data["cnn"])
    dtypes, ops = _init_dtypes(tmp_path / "s.onnx")
    assert ops.count("QuantizeLinear") >= 2 and "DequantizeLinear" in ops and "int8" in dtypes
    _close(m["cnn"], data["cnn"], tmp_path / "s.onnx", min_cos=0.98)


def test_static_int8_calibrates_a_fixed_batch_of_one(models, tmp_path):
    """torch.onnx.export's default: input[1,16]. Calibration fed batches of 8 and onnxruntime
    refused every one ('Got invalid dimensions for input')."""
    from edgekit.quantize.onnx_int8 import quantize_onnx_int8

    _, _, data = models
    path = make_mlp_onnx(tmp_path / "mlp-b1.onnx", batch=1)
    model = load_model(str(path))
    info = quantize_onnx_int8(path, tmp_path / "s.onnx", host_int8("static"), data["mlp"])
    assert info["quantized_ops"] >= 2
    _close(model, data["mlp"], tmp_path / "s.onnx", min_cos=0.98)


def test_static_without_data_is_a_clear_error(models, tmp_path):
    from edgekit.errors import EdgekitError
    from edgekit.quantize.onnx_int8 import OnnxInt8Settings, quantize_onnx_int8

    d, _, _ = models
    with pytest.raises(EdgekitError, match="needs calibration data"):
        quantize_onnx_int8(d / "cnn.onnx", tmp_path / "s.onnx", OnnxInt8Settings(mode="static"))
    with pytest.raises(ValueError, match="uint8"):
        OnnxInt8Settings(mode="dynamic", activation_type="int8")


def test_onnx_fp16_keeps_float32_io(models, tmp_path):
    from edgekit.quantize.onnx_fp16 import quantize_onnx_fp16

    d, m, data = models
    quantize_onnx_fp16(d / "mlp.onnx", tmp_path / "h.onnx")
    dtypes, ops = _init_dtypes(tmp_path / "h.onnx")
    assert "float16" in dtypes and "Cast" in ops
    session = open_session(tmp_path / "h.onnx", model=m["mlp"])
    assert session.inputs[0].dtype == "float32" and session.outputs[0].dtype == "float32"
    _close(m["mlp"], data["mlp"], tmp_path / "h.onnx")


@pytest.fixture(scope="module")
def tflite_base(models):
    """TFLite sources come from PyTorch (litert-torch): the only tests here that need torch."""
    pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    from edgekit.convert.tflite_export import export_tflite

    d, _, _ = models
    (d / "cnn_src.py").write_text(MLP)
    torch_cnn = load_model(f"{d / 'cnn_src.py'}:cnn", ["input:batchx3x8x8"])
    return export_tflite(torch_cnn, d / "cnn.tflite").path, torch_cnn


@pytest.mark.parametrize("precision, tensor_dtype", [
    ("int8-dynamic", "int8"), ("int8-weight-only", "int8"), ("int8-static", "int8"), ("fp16", "float16")])
def test_tflite_recipes(models, tflite_base, tmp_path, precision, tensor_dtype):
    from edgekit.backends.litert import open_interpreter
    from edgekit.quantize.tflite_quant import quantize_tflite

    _, _, data = models
    base, torch_cnn = tflite_base
    out = tmp_path / f"{precision}.tflite"
    quantize_tflite(base, out, precision, data["cnn"])
    tensors = open_interpreter(out, delegates=False).get_tensor_details()
    assert tensor_dtype in {np.dtype(t["dtype"]).name for t in tensors}
    assert out.stat().st_size < base.stat().st_size
    _close(torch_cnn, data["cnn"], out, min_cos=0.98)
    if precision == "int8-static":  # full integer: int8 input, quantised by the backend
        assert open_interpreter(out).get_input_details()[0]["dtype"] == np.int8


def test_tflite_conversion_needs_a_torch_source(tiny_onnx, tmp_path):
    from edgekit.convert.onnx_export import ConversionError
    from edgekit.convert.tflite_export import export_tflite

    with pytest.raises(ConversionError, match="needs a PyTorch source"):
        export_tflite(load_model(str(tiny_onnx)), tmp_path / "x.tflite")
