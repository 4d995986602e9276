"""Real data without writing an .npz: folders of pictures or WAV files, and text files of sentences.

- Pictures (PNG, JPEG, BMP, WebP) go through the model's declared image processing (the bundle's
  own, from ``--processing``: resize, grey or RGB, scale, mean/std, NCHW or NHWC); without one, it
  is read off the model's input (channels 1 or 3 first or last, its fixed height and width,
  pixels scaled to [0, 1]) and the source says so. Pictures in sub-folders are labelled by
  folder: the declared class names where there are some, else the folders in sorted order.
- WAV files (PCM 8/16/32-bit, any rate, any channels) are mixed to mono, resampled to the
  model's rate (the declared ``[audio]`` rate, its fixed ``sr`` input, else 16 kHz) and cut into
  frames of the audio input's length every ``hop`` samples (declared; default: no overlap);
  each file is one sequence, so a stateful model carries its state through a file.
- A text file is one sentence per line, tokenised with the declared tokenizer.

Which files a folder holds, and the sentences of a text file, are read by ``tables.files_table``
(what ``tables.open_table`` and ``edgekit predict`` read them with too); this module turns them
into tensors.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import DataError
from .spec import Model, TensorSpec
from .tables import FilesTable, TextTable

RATE_INPUTS = ("sr", "sample_rate", "sampling_rate")


def load_files(table: FilesTable | TextTable, model: Model, limit: Optional[int] = None):
    """A Dataset from ``tables.files_table``: pictures, WAV files or sentences."""
    from .dataset import Dataset

    if table.kind == "images":
        arrays, labels, source = _images(table, model, limit)
        return Dataset(arrays, labels, source=source)
    if table.kind == "audio":
        arrays, sequences, source = _audio(table, model, limit)
        return Dataset(arrays, None, source=source, sequences=sequences)
    return Dataset(_sentences(table, model, limit), None, source=f"{table.path} (sentences)")


# -- pictures ----------------------------------------------------------------------------------------
def _image_spec(model: Model):
    """The declared image processing, or one read off the model's 4-D float input."""
    from .manifest import ImageInput

    declared = (model.meta.get("processing") or {}).get("image")
    if declared:
        from ._schema import SchemaError, from_dict

        try:
            return from_dict(ImageInput, dict(declared), "image"), "the declared image processing"
        except SchemaError as exc:
            raise DataError(f"bad image processing declaration: {exc}", "see the README's processing section") from None
    candidates = [s for s in model.inputs if s.is_data and len(s.sample_shape) == 3 and s.dtype.startswith("float")]
    if len(candidates) != 1:
        raise DataError(f"{model.name} has no single image input (a float input of shape N x C x H x W or "
                        "N x H x W x C) to feed pictures to", "declare [image] in --processing (see the README)")
    spec = candidates[0]
    c, h, w = spec.sample_shape
    layout = "NCHW"
    if c not in (1, 3) and spec.sample_shape[-1] in (1, 3):
        h, w, c = spec.sample_shape
        layout = "NHWC"
    if not all(isinstance(d, int) for d in (c, h, w)):
        raise DataError(f"{model.name}'s image input {spec.name} has no fixed size ({spec.shape_str()}) to resize "
                        "pictures to", f"size it, e.g. --input {spec.name}:1x3x320x320, or declare [image] in "
                        "--processing")
    image = ImageInput(input=spec.name, height=h, width=w, mode="L" if c == 1 else "RGB", layout=layout)
    return image, f"pictures scaled to [0, 1], {layout}, {w}x{h} (no mean/std declared: give --processing)"


def _images(table: FilesTable, model: Model, limit: Optional[int]):
    from .manifest import Processing
    from .processing import Preprocessor

    image, how = _image_spec(model)
    root, files = table.path, list(table.files[:limit])
    prep = Preprocessor(Processing(image=image), root)
    tensors = []
    for f in files:
        try:
            tensors.append(prep([f.read_bytes()])[image.input][0])
        except Exception as exc:
            raise DataError(f"picture {f} cannot be read: {exc}", "remove it or replace it with a PNG or JPEG") from None
    labels = _folder_labels(root, files, model)
    return {image.input: np.stack(tensors)}, labels, f"{len(files)} pictures in {root} ({how})"


def _folder_labels(root: Path, files: list[Path], model: Model) -> Optional[np.ndarray]:
    folders = [f.parent.relative_to(root).parts for f in files]
    if not all(len(p) == 1 for p in folders):
        return None  # not an ImageFolder layout: no labels
    names = [p[0] for p in folders]
    outputs = (model.meta.get("processing") or {}).get("outputs") or []
    declared = list(outputs[0].get("labels", ())) if outputs else []
    classes = declared or sorted(set(names))
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DataError(f"picture folders {', '.join(unknown)} are not among the declared labels",
                        "name each folder after a class in the --labels file")
    return np.array([classes.index(n) for n in names], np.int64)


# -- audio ---------------------------------------------------------------------------------------------
def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the rate, from a PCM WAV file (stdlib ``wave``)."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise DataError(f"{path} is not a PCM WAV file edgekit can read ({exc})",
                        "convert it to 16-bit PCM WAV (e.g. ffmpeg -i in.mp3 -c:a pcm_s16le out.wav)") from None
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width in (2, 4):
        dtype = np.int16 if width == 2 else np.int32
        x = np.frombuffer(raw, dtype).astype(np.float32) / float(np.iinfo(dtype).max)
    else:
        raise DataError(f"{path} has {width * 8}-bit samples", "convert it to 16-bit PCM WAV")
    return x.reshape(-1, channels).mean(axis=1), rate


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear interpolation: enough for calibration data (the model never sees the difference
    between this and a polyphase filter on speech at these rates)."""
    if rate == target or len(x) == 0:
        return x
    n = int(round(len(x) * target / rate))
    return np.interp(np.arange(n) * (rate / target), np.arange(len(x)), x).astype(np.float32)


def model_rate(model: Model) -> int:
    declared = (model.meta.get("processing") or {}).get("audio") or {}
    if declared.get("rate"):
        return int(declared["rate"])
    for spec in model.inputs:
        if spec.name.lower() in RATE_INPUTS and spec.value is not None:
            return int(spec.value[0])
    return 16000


def _audio_input(model: Model) -> TensorSpec:
    candidates = [s for s in model.inputs if s.is_data and len(s.sample_shape) == 1 and s.dtype.startswith("float")]
    if len(candidates) != 1:
        raise DataError(f"{model.name} has no single audio input (a float input of N x SAMPLES) to frame WAV "
                        "files for", "give an .npz with one array per input instead")
    spec = candidates[0]
    if not isinstance(spec.sample_shape[0], int):
        raise DataError(f"the audio input {spec.name} has no fixed frame length ({spec.shape_str()})",
                        f"size it, e.g. --input {spec.name}:1x512")
    others = [s.name for s in model.inputs if s.is_data and s is not spec]
    if others:
        raise DataError(f"WAV files feed only {spec.name}; {', '.join(others)} need values too",
                        "fix them with --input NAME:=VALUE, mark a state with --state, or give an .npz")
    return spec


def _audio(table: FilesTable, model: Model, limit: Optional[int]):
    spec = _audio_input(model)
    frame, rate = spec.sample_shape[0], model_rate(model)
    hop = int(((model.meta.get("processing") or {}).get("audio") or {}).get("hop") or frame)
    root, files = table.path, table.files
    frames, sequences = [], []
    for index, f in enumerate(files):
        x, source_rate = read_wav(f)
        x = resample(x, source_rate, rate)
        count = (len(x) - frame) // hop + 1 if len(x) >= frame else 0
        if count:
            frames.append(np.lib.stride_tricks.sliding_window_view(x, frame)[::hop][:count].copy())
            sequences.append(np.full(count, index, np.int64))
    if not frames:
        raise DataError(f"the WAV files in {root} are all shorter than one frame of {frame} samples",
                        "give longer recordings")
    arrays = np.concatenate(frames)[:limit]
    return ({spec.name: arrays.astype(spec.dtype)}, np.concatenate(sequences)[:limit],
            f"{len(files)} WAV files in {root} ({len(arrays)} frames of {frame} samples every {hop} at {rate} Hz)")


# -- text ----------------------------------------------------------------------------------------------
def _sentences(table: TextTable, model: Model, limit: Optional[int]) -> dict[str, np.ndarray]:
    from .manifest import Processing, TextInput
    from .processing import Preprocessor

    declared = (model.meta.get("processing") or {}).get("text")
    if not declared:
        raise DataError(f"{model.name} declares no tokenizer to turn {table.path}'s sentences into tokens",
                        "declare [text] with a tokenizer.json in --processing (see the README)")
    tokenizer = Path(declared["tokenizer"])
    fields = {k: v for k, v in declared.items() if k in TextInput.__struct_fields__}
    text = TextInput(**{**fields, "tokenizer": tokenizer.name, "sha256": "0" * 64})
    sentences = [str(t) for chunk in table.chunks() for t in chunk["text"]][:limit]
    return Preprocessor(Processing(text=text), tokenizer.parent)(sentences)
