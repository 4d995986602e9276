import numpy as np
import pytest

from edgekit.errors import ModelLoadError
from edgekit.models import describe, load_model, parse_input_spec


def test_parse_input_spec():
    spec = parse_input_spec("input_ids:batchx128:int64")
    assert spec.name == "input_ids" and spec.shape == ("batch", 128) and spec.dtype == "int64"
    assert parse_input_spec("x:1x3x224x224").dtype == "float32"
    for bad in ["x", "x:1x?:int64", "x:1x2:complex"]:
        with pytest.raises(ModelLoadError):
            parse_input_spec(bad)


def test_onnx_interface_and_description(tiny_onnx):
    model = load_model(str(tiny_onnx))
    assert model.format == "onnx"
    assert [(s.name, s.shape, s.dtype) for s in model.inputs] == [("x", ("batch", 4), "float32")]
    assert model.outputs[0].shape == ("batch", 3)
    info = describe(model)
    assert info["parameters"] == 4 * 3 + 3
    assert info["opset"] == 17
    assert info["ops"] == {"MatMul": 1, "Add": 1, "Relu": 1}
    assert info["file_size_bytes"] == tiny_onnx.stat().st_size


def test_onnx_input_override_fixes_dims(tiny_onnx):
    model = load_model(str(tiny_onnx), ["x:8x4"])
    assert model.inputs[0].shape == (8, 4)
    with pytest.raises(ModelLoadError, match="matches no input of"):
        load_model(str(tiny_onnx), ["nope:1x4"])
    with pytest.raises(ModelLoadError, match="has 3 dims"):
        load_model(str(tiny_onnx), ["x:1x4x4"])


@pytest.mark.parametrize("spec, message", [
    ("x:batchx5", "dim 1 is fixed at 4 .*, not 5"),      # the graph's fixed dims are facts
    ("x:batchx4:int64", "x:int64 but .* takes float32"),  # so is its dtype
])
def test_onnx_input_override_cannot_contradict_the_graph(tiny_onnx, spec, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(str(tiny_onnx), [spec])
    assert load_model(str(tiny_onnx), ["x:2x4"]).inputs[0].dtype == "float32"  # no dtype given: the graph's


def test_repeated_input_is_refused(tiny_onnx):
    with pytest.raises(ModelLoadError, match="--input x is given more than once"):
        load_model(str(tiny_onnx), ["x:1x4", "x:2x4"])


def test_truncated_onnx(tmp_path, tiny_onnx):
    data = tiny_onnx.read_bytes()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="not a valid ONNX file|fails the ONNX checker"):
        load_model(str(bad))


def test_random_bytes_and_empty_files(tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelLoadError, match="not a TFLite flatbuffer"):
        load_model(str(junk))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is empty"):
        load_model(str(empty))
    junk_onnx = tmp_path / "junk.onnx"
    junk_onnx.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(ModelLoadError, match="ONNX"):
        load_model(str(junk_onnx))


def test_missing_paths_and_unknown_refs(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope.onnx"))
    with pytest.raises(ModelLoadError, match="cannot tell what kind"):
        load_model("just-a-word")
    with pytest.raises(ModelLoadError, match="is a directory"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="did you mean edgekit:digits-cnn"):
        load_model("edgekit:digits")


def test_tflite_interface_and_description(tiny_tflite):
    model = load_model(str(tiny_tflite))
    assert model.format == "tflite"
    assert model.inputs[0].shape == (1, 1, 8, 8) and model.inputs[0].dtype == "float32"
    assert model.outputs[0].shape == (1, 10)
    info = describe(model)
    assert info["parameters"] == 1 * 4 * 9 + 4 + 4 * 64 * 10 + 10
    assert "FULLY_CONNECTED" in info["ops"] and "DELEGATE" not in info["ops"]
    assert {"CONV_2D", "DEPTHWISE_CONV_2D"} & set(info["ops"])  # a 1-channel conv may become depthwise


def test_factory_by_file_and_module(factory_file, monkeypatch):
    model = load_model(f"{factory_file}:build")
    assert model.format == "pytorch"
    assert [s.name for s in model.inputs] == ["features"]
    assert model.inputs[0].shape == (1, 6) and model.outputs[0].shape == (1, 2)
    info = describe(model)
    assert info["parameters"] == 6 * 2 + 2
    assert "linear" in info["ops"]
    monkeypatch.syspath_prepend(str(factory_file.parent))
    named = load_model("mynet:build", ["features:batchx6"])
    assert named.inputs[0].shape == ("batch", 6)
    assert named.outputs[0].shape == ("batch", 2)  # follows the dynamic batch


@pytest.mark.parametrize("func, message", [
    ("wrong_type", r"not \(module, example_inputs\)"),
    ("wrong_inputs", "example inputs of type dict"),
    ("missing", "has no callable 'missing'"),
])
def test_factory_errors(factory_file, func, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(f"{factory_file}:{func}")


def test_factory_import_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot import module"):
        load_model("no_such_module_xyz:build")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(f"{tmp_path / 'nope.py'}:build")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ModelLoadError, match="importing .* failed: RuntimeError: boom"):
        load_model(f"{broken}:build")


def test_pt2_round_trip(factory_file, tmp_path):
    torch = pytest.importorskip("torch")
    model = load_model(f"{factory_file}:build")
    program = torch.export.export(model.module, model.example_inputs)
    path = tmp_path / "net.pt2"
    torch.export.save(program, str(path))
    loaded = load_model(str(path))
    assert loaded.format == "pt2" and loaded.inputs[0].name == "features"
    assert describe(loaded)["ops"]
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelLoadError, match="not a loadable torch.export archive"):
        load_model(str(bad))


def test_a_package_in_the_working_directory_is_importable_from_the_console_script(tmp_path, monkeypatch):
    """`edgekit inspect mypkg.models:build` beside mypkg/ failed ('No module named mypkg'): a console
    script's sys.path holds its bin folder, not the working directory, as `python -m` does."""
    import sys

    from edgekit._hooks import import_callable

    (tmp_path / "walkpkg").mkdir()
    (tmp_path / "walkpkg" / "__init__.py").write_text("")
    (tmp_path / "walkpkg" / "hooks.py").write_text("def answer():\n    return 42\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert import_callable("walkpkg.hooks:answer")() == 42
    assert sys.path[-1] == str(tmp_path)  # after the installed packages: it never shadows one
    sys.modules.pop("walkpkg.hooks", None)
    sys.modules.pop("walkpkg", None)
