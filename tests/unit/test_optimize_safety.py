"""optimize never harms what it did not write, refuses data it cannot judge on, and stops on Ctrl-C.

Built on the tiny ONNX model (no torch): these are properties of the pipeline, not of a converter.
"""

import os
import signal
import tempfile

import numpy as np
import pytest

from edgekit import optimize
from edgekit.errors import DataError, EdgekitError

FAST = dict(target="host", formats={"onnx"}, precisions={"fp32"}, timing_s=0.2)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32))
    return path


def test_out_that_holds_user_files_is_refused_untouched(tiny_onnx, data, tmp_path, cli):
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "thesis.txt").write_text("x")
    result = cli("optimize", tiny_onnx, "--data", data, "--target", "host", "--formats", "onnx",
                 "--precisions", "fp32", "--timing-seconds", "0.2", "--out", user)
    assert result.exit_code == 1 and "did not write, and it is not empty" in result.output
    assert (user / "thesis.txt").read_text() == "x" and sorted(p.name for p in user.iterdir()) == ["thesis.txt"]
    assert not list(tmp_path.glob(".userdir*"))


def test_out_that_is_a_file_or_the_working_directory(tiny_onnx, data, tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    with pytest.raises(EdgekitError, match="exists and is not a directory edgekit wrote"):
        optimize(str(tiny_onnx), data=str(data), out=afile, **FAST)
    assert afile.read_text() == "keep me"
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.md").write_text("mine")
    monkeypatch.chdir(work)
    with pytest.raises(EdgekitError, match="did not write"):
        optimize(str(tiny_onnx), data=str(data), out=".", **FAST)
    assert sorted(p.name for p in work.iterdir()) == ["notes.md"]  # no '..XXXX.partial' left behind
    assert not list(tmp_path.glob("*.partial"))


def test_own_output_is_replaced_and_an_empty_dir_is_used(tiny_onnx, data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()  # empty: fine
    optimize(str(tiny_onnx), data=str(data), out=out, **FAST)
    assert (out / ".edgekit-output").is_file() and (out / "manifest.json").is_file()
    optimize(str(tiny_onnx), data=str(data), out=out, **FAST)  # edgekit's own: replaced
    assert (out / "manifest.json").is_file() and not list(tmp_path.glob(".out.*"))


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.full((8, 4), np.nan, np.float32)}, "holds NaN or infinite values in 8 of 8 samples"),
    ({"x": np.zeros((0, 4), np.float32)}, "holds 0 samples"),
    ({"x": np.float32(1.0)}, "is a scalar \\(0-d\\)"),
])
def test_evaluation_data_that_cannot_judge_accuracy_is_refused(tiny_onnx, tmp_path, arrays, message, cli):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        optimize(str(tiny_onnx), data=str(path), out=tmp_path / "o", **FAST)
    assert not (tmp_path / "o").exists()
    result = cli("optimize", tiny_onnx, "--data", path, "--out", tmp_path / "o2")
    assert result.exit_code == 1 and "unexpected" not in result.output


def test_a_swallowed_ctrl_c_still_stops_the_run(tiny_onnx, data, tmp_path, monkeypatch):
    """A converter that catches KeyboardInterrupt and raises its own error must not turn a
    Ctrl-C into 'that candidate failed' and a finished run with exit 0."""
    from edgekit.optimizer import build

    real = build.Builder.build

    def swallowing(self, candidate):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            return real(self, candidate)
        except BaseException as exc:  # what some libraries do with every exception
            raise RuntimeError(f"conversion failed: {exc!r}") from None

    monkeypatch.setattr(build.Builder, "build", swallowing)
    # A run started in the background (nohup, a service, CI) inherits SIGINT ignored; this test is
    # about a terminal's Ctrl-C, so it sets Python's default handler itself.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            optimize(str(tiny_onnx), data=str(data), out=tmp_path / "o", **FAST)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert not (tmp_path / "o").exists()


def test_work_directories_of_killed_runs_are_swept(tiny_onnx, data, tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tempfile.mkdtemp(prefix=f"edgekit-opt-{dead.pid}-")
    live = tempfile.mkdtemp(prefix=f"edgekit-opt-{os.getppid()}-")  # a running process: kept
    mine = tempfile.mkdtemp(prefix="someone-else-")  # not edgekit's: never touched
    try:
        optimize(str(tiny_onnx), data=str(data), out=tmp_path / "o", **FAST)
        assert not os.path.exists(stale) and os.path.isdir(live) and os.path.isdir(mine)
    finally:
        for path in (stale, live, mine):
            if os.path.isdir(path):
                os.rmdir(path)


def test_a_user_model_declares_its_processing_and_labels(tmp_path, cli):
    """--processing and --labels make a bundle that takes pictures and answers class names."""
    import io

    pytest.importorskip("PIL")
    from PIL import Image

    from edgekit.runtime import load
    from tests.conftest import make_cnn_onnx

    model = make_cnn_onnx(tmp_path / "cnn.onnx", channels=3, size=8, classes=4)
    np.savez(tmp_path / "data.npz", input=np.random.default_rng(0).random((16, 3, 8, 8)).astype(np.float32))
    (tmp_path / "pictures.toml").write_text('[image]\ninput = "input"\nheight = 8\nwidth = 8\nmode = "RGB"\n'
                                            'mean = [0.5]\nstd = [0.25]\n')
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\nfish\n")
    result = cli("optimize", model, "--data", tmp_path / "data.npz", "--formats", "onnx", "--precisions", "fp32",
                 "--timing-seconds", "0.2", "--processing", tmp_path / "pictures.toml", "--labels",
                 tmp_path / "classes.txt", "--out", tmp_path / "out", "--package")
    assert result.exit_code == 0, result.output
    bundle = load(tmp_path / "out.ekb")
    picture = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 90)).save(picture, "PNG")
    answer = bundle.predict_raw(picture.getvalue())
    assert answer["label"] in {"cat", "dog", "bird", "fish"} and len(answer["top_k"]) == 4
    pixels = ((np.array([200, 30, 90], np.float32) / 255 - 0.5) / 0.25)[:, None, None] * np.ones((3, 8, 8), np.float32)
    direct = bundle.predict({"input": pixels[None]})["logits"]  # the same tensor the processing should make
    assert answer["label"] == ["cat", "dog", "bird", "fish"][int(direct.argmax())]


def test_processing_that_does_not_fit_the_model_is_refused(tmp_path, cli):
    from tests.conftest import make_cnn_onnx

    model = make_cnn_onnx(tmp_path / "cnn.onnx", classes=4)
    np.savez(tmp_path / "data.npz", input=np.random.default_rng(0).random((8, 3, 8, 8)).astype(np.float32))
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")  # three names for four classes
    result = cli("optimize", model, "--data", tmp_path / "data.npz", "--formats", "onnx", "--precisions", "fp32",
                 "--labels", tmp_path / "classes.txt", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "3 labels for output 'logits' of 4 classes" in result.output
