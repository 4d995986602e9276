"""Inputs as models really have them: batch axes, fixed values, recurrent state, unsized dims."""

import numpy as np
import pytest
from tests.conftest import ppocr, silero_vad

from edgekit.errors import DataError, ModelLoadError
from edgekit.models import load_model
from edgekit.spec import parse_input_spec


def test_input_spec_takes_a_fixed_value():
    assert parse_input_spec("sr:int64:=16000").value == (16000.0,)
    assert parse_input_spec("sr:int64:=16000").dtype == "int64"
    assert parse_input_spec("sr:=8000").shape == ()
    table = parse_input_spec("w:3:=1,2,3")
    assert table.shape == (3,) and table.value == (1.0, 2.0, 3.0)
    with pytest.raises(ModelLoadError, match="gives 2 values for shape 3"):
        parse_input_spec("w:3:=1,2")
    with pytest.raises(ModelLoadError, match="bad value"):
        parse_input_spec("sr:int64:=fast")


@pytest.mark.parametrize("text", ["input:0x1x8x8", "input:99999999999999999999x1x8x8", "input:1x²x8"])
def test_a_fixed_dimension_is_a_real_size(text):
    """0 rows or a 20-digit batch built a bundle that failed every call."""
    with pytest.raises(ModelLoadError, match="is not a size from 1 to|bad dimension"):
        parse_input_spec(text)


def test_silero_state_has_its_batch_on_axis_1_and_sr_is_fixed():
    model = load_model(str(silero_vad()), ["input:1x576", "sr:int64:=16000"])
    spec = {s.name: s for s in model.inputs}
    assert spec["input"].batch_axis == 0
    assert spec["state"].batch_axis == 1 and spec["state"].state_of == "stateN"
    assert spec["sr"].batch_axis is None and spec["sr"].value == (16000,)
    assert {o.name: o.batch_axis for o in model.outputs}["stateN"] == 1
    # unnamed dims of different tensors are never taken for the same dim
    assert spec["state"].shape[1] != {o.name: o for o in model.outputs}["output"].shape[0]


def test_batch_axis_option_overrides_and_is_checked():
    model = load_model(str(silero_vad()), ["input:1x576", "sr:=16000"], batch_axes=["state:none"])
    assert model.input("state").batch_axis is None
    with pytest.raises(ModelLoadError, match="has 3 dims"):
        load_model(str(silero_vad()), ["input:1x576"], batch_axes=["state:5"])
    with pytest.raises(ModelLoadError, match="not an input"):
        load_model(str(silero_vad()), batch_axes=["nope:1"])
    with pytest.raises(ModelLoadError, match="bad --batch-axis"):
        load_model(str(silero_vad()), batch_axes=["state"])


def test_feeds_put_samples_on_each_inputs_batch_axis():
    from edgekit.data import Dataset, check_against

    model = load_model(str(silero_vad()), ["input:1x576", "sr:int64:=16000"])
    frames = np.random.default_rng(0).standard_normal((5, 576)).astype(np.float32)
    data = check_against(Dataset({"input": frames}, source="t"), model)
    feeds = data.feeds(1, 4)
    assert feeds["input"].shape == (3, 576) and np.array_equal(feeds["input"], frames[1:4])
    assert feeds["state"].shape == (2, 3, 128) and not feeds["state"].any()  # a sequence starts at zero
    assert feeds["sr"].shape == () and int(feeds["sr"]) == 16000


def test_stateful_runs_feed_the_state_back_and_restart_per_sequence():
    """run_dataset against a hand-written loop over the real model: state carried within a
    sequence, zero where a new one begins."""
    import onnxruntime as ort

    from edgekit.formats import open_session
    from edgekit.data import Dataset, check_against, run_dataset

    path = silero_vad()
    model = load_model(str(path), ["input:1x576", "sr:int64:=16000"])
    t = np.arange(576 * 6) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    frames = np.stack([audio[i * 512:i * 512 + 576] for i in range(6)])
    seq = np.array([0, 0, 0, 1, 1, 1])
    data = check_against(Dataset({"input": frames}, source="t", sequences=seq), model)
    got = run_dataset(open_session(path, model=model), data, model)[0][:, 0]
    session = ort.InferenceSession(str(path))
    want = []
    for i in range(6):
        if i % 3 == 0:
            state = np.zeros((2, 1, 128), np.float32)
        out, state = session.run(None, {"input": frames[i:i + 1], "state": state, "sr": np.array(16000)})
        want.append(out[0, 0])
    np.testing.assert_allclose(got, want, atol=1e-6)
    restarted = run_dataset(open_session(path, model=model), data.subset(np.arange(3, 6)), model)[0][:, 0]
    np.testing.assert_allclose(restarted, want[3:], atol=1e-6)


def test_unsized_dims_are_refused_with_the_input_line_to_write():
    from edgekit.data import synthesize

    model = load_model(str(ppocr("det")))
    with pytest.raises(DataError) as info:
        synthesize(model)
    assert "x (" in str(info.value) and "dim 2, 3" in str(info.value)
    assert "--input x:1x3xSIZExSIZE" in info.value.hint
    sized = load_model(str(ppocr("det")), ["x:1x3x64x64"])
    assert synthesize(sized, n=2).arrays["x"].shape == (2, 3, 64, 64)


def test_a_model_failing_on_synthetic_inputs_says_what_was_fed(tmp_path):
    """Silero without sr fixed gets a random integer for it and fails inside: the error names the
    inputs and values used and how to give real ones, in one line."""
    from edgekit import optimize

    with pytest.raises(DataError) as info:
        optimize(str(silero_vad()), target="host", inputs=("input:1x576",), out=tmp_path / "o", formats={"onnx"},
                 precisions={"fp32"})
    text = str(info.value)
    assert "synthetic" in text and "input: float32[576]" in text and "sr:" in text
    assert "--data" in info.value.hint and "\n" not in text


def test_inspect_shows_how_each_tensor_takes_samples(cli):
    result = cli("inspect", silero_vad(), "--input", "input:1x576", "--input", "sr:int64:=16000")
    assert result.exit_code == 0, result.output
    assert "batch on dim 1; state <- stateN" in result.output and "fixed = 16000" in result.output
    forced = cli("inspect", silero_vad(), "--batch-axis", "state:none", "--json")
    state = next(t for t in __import__("json").loads(forced.output)["inputs"] if t["name"] == "state")
    assert state["batch_axis"] is None


def test_static_analysis_leaves_nothing_in_the_working_directory(tmp_path, monkeypatch):
    """onnxruntime's symbolic shape inference saves sym_shape_infer_temp.onnx and a UUID .data
    file into the cwd when it cannot finish (Silero's cleaned graph keeps shape-dependent Ifs):
    a user's folder must not collect them, nor lose a file of that name."""
    import onnx

    from edgekit.convert.onnx_clean import clean
    from edgekit.profile.static import analyse

    model = load_model(str(silero_vad()), ["input:1x576", "sr:int64:=16000"])
    clean(model, tmp_path / "vad.onnx")
    work = tmp_path / "work"
    work.mkdir()
    (work / "sym_shape_infer_temp.onnx").write_text("the user's own file")
    monkeypatch.chdir(work)
    analyse(onnx.load(str(tmp_path / "vad.onnx")), {"input": [1, 576], "state": [2, 1, 128]})
    assert sorted(p.name for p in work.iterdir()) == ["sym_shape_infer_temp.onnx"]
    assert (work / "sym_shape_infer_temp.onnx").read_text() == "the user's own file"


def test_one_list_of_dtypes_for_interfaces_bundles_and_logs():
    """The dtypes were listed three times (the --input parser lacked int16, which manifests and log
    records took): one definition now, and each reader refuses what it lacks alike."""
    from edgekit.manifest import IOSpec
    from edgekit.serve.protocol import V2_TO_NP
    from edgekit.spec import DTYPES, normalise_dtype
    from edgekit.sync.record import decode_array, encode_array

    for dtype in DTYPES:
        assert normalise_dtype(dtype) == dtype and dtype in V2_TO_NP.values()
        IOSpec("x", (1, 2), dtype).validate()
        assert decode_array(encode_array(np.zeros(2, dtype))).dtype == np.dtype(dtype)
    assert normalise_dtype("fp16") == "float16"
    with pytest.raises(Exception, match="unknown dtype 'complex64'"):
        normalise_dtype("complex64")
    with pytest.raises(ValueError, match="not one of"):
        IOSpec("x", (1,), "complex64").validate()
    with pytest.raises(ValueError, match="known dtype"):
        decode_array({"dtype": "complex64", "shape": [1], "b64": ""})
