"""--data as users hold it: folders of pictures or WAV files, text files of sentences."""

import wave

import numpy as np
import pytest
from tests.conftest import make_cnn_onnx, silero_vad

from edgekit.data import load_data
from edgekit.datafiles import read_wav, resample
from edgekit.errors import DataError
from edgekit.models import load_model


def _wav(path, samples, rate=16000, channels=1, width=2):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def test_wav_is_read_mixed_to_mono_and_resampled(tmp_path):
    t = np.arange(8000) / 8000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([tone, tone], axis=1).reshape(-1)
    x, rate = read_wav(_wav(tmp_path / "a.wav", stereo, rate=8000, channels=2))
    assert rate == 8000 and len(x) == 8000 and abs(float(np.abs(x).max()) - 0.5) < 1e-3
    up = resample(x, 8000, 16000)
    assert len(up) == 16000
    # the tone keeps its frequency: 440 zero-crossing pairs a second
    crossings = int(np.sum(np.diff(np.signbit(up)) != 0))
    assert 870 <= crossings <= 890


def test_wav_folder_becomes_overlapping_frames_one_sequence_per_file(tmp_path):
    folder = tmp_path / "speech"
    folder.mkdir()
    _wav(folder / "a.wav", np.linspace(-0.5, 0.5, 16000 * 2))  # 2 s at 16 kHz
    _wav(folder / "b.wav", np.zeros(48000), rate=48000)  # 1 s at 48 kHz: resampled to 16000 samples
    model = load_model(str(silero_vad()), ["input:1x576", "sr:int64:=16000"])
    model.meta["processing"] = {"audio": {"input": "input", "rate": 16000, "hop": 512}}
    data = load_data(str(folder), model)
    first = (32000 - 576) // 512 + 1
    second = (16000 - 576) // 512 + 1
    assert len(data) == first + second
    assert data.arrays["input"].shape[1:] == (576,)
    assert (data.sequences == 0).sum() == first and (data.sequences == 1).sum() == second
    # hop 512: each frame starts with the last 64 samples of the one before
    np.testing.assert_array_equal(data.arrays["input"][1][:64], data.arrays["input"][0][512:])
    assert "2 WAV files" in data.source and "every 512" in data.source


def test_bad_wav_is_one_clear_error(tmp_path):
    folder = tmp_path / "speech"
    folder.mkdir()
    (folder / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    model = load_model(str(silero_vad()), ["input:1x576", "sr:int64:=16000"])
    with pytest.raises(DataError, match="not a PCM WAV file"):
        load_data(str(folder), model)


def test_picture_folder_with_class_folders_gives_labels(tmp_path):
    from PIL import Image

    model = load_model(str(make_cnn_onnx(tmp_path / "cnn.onnx", channels=3, size=8)), ["input:1x3x8x8"])
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "pics" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "pics" / label / f"{i}.png")
    data = load_data(str(tmp_path / "pics"), model)
    assert data.arrays["input"].shape == (6, 3, 8, 8)
    assert data.arrays["input"].min() >= 0 and data.arrays["input"].max() <= 1  # scaled to [0, 1]
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert "no mean/std declared" in data.source


def test_declared_processing_normalises_pictures(tmp_path):
    from PIL import Image

    model = load_model(str(make_cnn_onnx(tmp_path / "cnn.onnx", channels=3, size=8)), ["input:1x3x8x8"])
    model.meta["processing"] = {"image": {"input": "input", "height": 8, "width": 8, "mean": [0.5, 0.5, 0.5],
                                          "std": [0.5, 0.5, 0.5]}}
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (16, 16), (255, 255, 255)).save(tmp_path / "pics" / "white.png")
    data = load_data(str(tmp_path / "pics"), model)
    np.testing.assert_allclose(data.arrays["input"], 1.0, atol=1e-6)  # (1 - 0.5) / 0.5
    assert data.labels is None


def test_pictures_for_a_model_without_a_fixed_size_say_how_to_give_one(tmp_path):
    from PIL import Image

    model = load_model(str(make_cnn_onnx(tmp_path / "cnn.onnx")))  # batch x 3 x 8 x 8: fixed, fine
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "pics" / "a.png")
    assert load_data(str(tmp_path / "pics"), model).arrays["input"].shape == (1, 3, 8, 8)
    from tests.conftest import ppocr

    det = load_model(str(ppocr("det")))
    with pytest.raises(DataError, match="no fixed size") as info:
        load_data(str(tmp_path / "pics"), det)
    assert "--input x:1x3x320x320" in info.value.hint


def test_text_file_is_tokenised_with_the_declared_tokenizer(tmp_path):
    from edgekit.zoo.minilm import model_dir

    from tests.conftest import make_transformer_onnx

    model = load_model(str(make_transformer_onnx(tmp_path / "t.onnx", vocab=40000, seq=16)))
    model.meta["processing"] = {"text": {"tokenizer": str(model_dir() / "tokenizer.json"), "max_length": 16,
                                         "ids": "input_ids", "mask": None}}
    (tmp_path / "s.txt").write_text("a cat sat on the mat\n\nedge devices run models\n")
    data = load_data(str(tmp_path / "s.txt"), model)
    assert data.arrays["input_ids"].shape == (2, 16) and data.arrays["input_ids"].dtype == np.int64
    model.meta["processing"] = None
    with pytest.raises(DataError, match="declares no tokenizer"):
        load_data(str(tmp_path / "s.txt"), model)
