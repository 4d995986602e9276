"""A bundle's own pre- and post-processing: pictures and sentences in, labels and scores out.

Declared in the manifest (``edgekit.manifest.Processing``) and applied with numpy, Pillow and
``tokenizers`` only (no torch), so ``model.predict_raw("a sentence")`` works on a device and in
``edgekit serve`` alike. Bad input (an undecodable picture, a number where text belongs) is an
``InputError`` that names the problem.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .errors import EdgekitError, InputError, require
from .manifest import ImageInput, Processing, TextInput
from .metrics import softmax

MAX_PIXELS = 64_000_000  # a picture larger than this is refused before it is decoded (bombs)
_RESAMPLE = {"nearest": 0, "box": 4, "bilinear": 2, "bicubic": 3, "lanczos": 1}  # PIL's codes


def _input_error(message: str, hint: Optional[str] = None) -> EdgekitError:
    return InputError(message, hint)


class Preprocessor:
    """Raw items (pictures or sentences) to the model's input tensors, as a batch."""

    def __init__(self, processing: Processing, root: Path):
        self.image: Optional[ImageInput] = processing.image
        self.text: Optional[TextInput] = processing.text
        self._tokenizer = None
        self._root = root

    @property
    def kind(self) -> str:
        return "image" if self.image else "text" if self.text else ""

    def __call__(self, items: list, max_pixels: Optional[int] = None) -> dict[str, np.ndarray]:
        """``max_pixels``: a budget for all the pictures of one call together (a server's per
        request), checked from their headers before any is decoded."""
        if not items:
            raise _input_error("no input items were given", "pass one picture or sentence, or a list of them")
        if self.image:
            budget = [max_pixels if max_pixels is not None else None]
            return {self.image.input: np.stack([self._picture(item, i, budget) for i, item in enumerate(items)])}
        return self._tokens(items)

    # -- pictures -------------------------------------------------------------------------------
    def _picture(self, item: Any, index: int, budget: list) -> np.ndarray:
        spec = self.image
        Image = require("PIL.Image", "pillow", "serve", "pictures as model input")
        img = self._decode(item, index, Image, budget)
        img = img.convert(spec.mode)
        pixels = np.asarray(img, dtype=np.float32)
        if spec.invert == "yes" or (spec.invert == "auto" and _border_mean(pixels) > 127.5):
            img = Image.fromarray((255 - np.asarray(img)).astype(np.uint8), mode=spec.mode)
        if img.size != (spec.width, spec.height):
            img = img.resize((spec.width, spec.height), resample=_RESAMPLE[spec.resample])
        x = np.asarray(img, dtype=np.float32) * spec.scale
        if x.ndim == 2:
            x = x[:, :, None]
        if spec.mean:
            x = x - np.asarray(spec.mean, np.float32)
        if spec.std:
            x = x / np.asarray(spec.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1) if spec.layout == "NCHW" else x)

    def _decode(self, item: Any, index: int, Image, budget: list):
        if hasattr(item, "convert") and hasattr(item, "size"):  # already a PIL image
            return item
        if isinstance(item, np.ndarray):
            if item.ndim not in (2, 3) or item.dtype != np.uint8:
                raise _input_error(f"item {index}: an image array must be HxW or HxWxC uint8, got "
                                   f"{item.dtype} {item.shape}")
            return Image.fromarray(item)
        if isinstance(item, (str, Path)) and not isinstance(item, bytes):
            try:
                item = Path(item).read_bytes()
            except OSError as exc:
                raise _input_error(f"item {index}: cannot read picture {item}: {exc.strerror}") from None
        if not isinstance(item, (bytes, bytearray, memoryview)):
            raise _input_error(f"item {index} is {type(item).__name__}; this model takes pictures",
                               "send PNG or JPEG bytes, a file path or a uint8 array")
        try:  # Pillow's own bomb check is a process-wide setting: the size is checked here instead
            img = Image.open(io.BytesIO(bytes(item)))  # reads the header only
            pixels = img.size[0] * img.size[1]
            # Pillow only warns between its limit and twice it: refuse here, before decoding
            if pixels > MAX_PIXELS:
                raise _input_error(f"item {index} is a {img.size[0]}x{img.size[1]} picture, more than "
                                   f"{MAX_PIXELS // 1_000_000} Mpx", "send a smaller picture")
            if budget[0] is not None:
                if pixels > budget[0]:
                    raise _input_error(f"item {index}: the pictures of this request hold more than "
                                       "its pixel budget", "send fewer or smaller pictures per request")
                budget[0] -= pixels
            img.load()
        except EdgekitError:
            raise
        except Exception as exc:  # Pillow raises many types for broken or hostile files
            raise _input_error(f"item {index} is not a picture Pillow can decode ({type(exc).__name__}: "
                               f"{str(exc)[:120]})", "send a PNG or JPEG file") from None
        return img

    # -- text -------------------------------------------------------------------------------------
    def _tokens(self, items: list) -> dict[str, np.ndarray]:
        spec = self.text
        bad = next((i for i, s in enumerate(items) if not isinstance(s, str)), None)
        if bad is not None:
            raise _input_error(f"item {bad} is {type(items[bad]).__name__}; this model takes text",
                               "send strings (sentences)")
        encoded = self.tokenizer().encode_batch(items)
        if not spec.pad_to_max:  # pad to the longest in this batch
            longest = max(len(e.ids) for e in encoded)
            for e in encoded:
                e.pad(longest)
        out = {spec.ids: np.array([e.ids for e in encoded], dtype=np.int64)}
        if spec.mask:
            out[spec.mask] = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        if spec.type_ids:
            out[spec.type_ids] = np.array([e.type_ids for e in encoded], dtype=np.int64)
        return out

    def tokenizer(self):
        if self._tokenizer is None:
            tokenizers = require("tokenizers", "tokenizers", "serve", "text as model input")
            from .bundle import _inside

            tok = tokenizers.Tokenizer.from_file(str(_inside(self._root, self.text.tokenizer)))
            tok.enable_truncation(self.text.max_length)
            if self.text.pad_to_max:
                tok.enable_padding(length=self.text.max_length, pad_id=tok.token_to_id("[PAD]") or 0)
            else:  # a tokenizer.json may carry its own fixed padding (MiniLM's pads to 128): that is ours to set
                tok.no_padding()
            self._tokenizer = tok
        return self._tokenizer


def _border_mean(pixels: np.ndarray) -> float:
    edge = np.concatenate([pixels[0].ravel(), pixels[-1].ravel(), pixels[:, 0].ravel(), pixels[:, -1].ravel()])
    return float(edge.mean())


class Postprocessor:
    """Output tensors to one result per row: label, score and top k for classifiers; the
    (optionally normalised) vector for embeddings; plain lists for anything else."""

    def __init__(self, processing: Optional[Processing], output_names: list[str]):
        self.posts = {p.output: p for p in (processing.outputs if processing else ())}
        self.names = output_names

    def __call__(self, outputs: dict[str, np.ndarray]) -> list[dict]:
        rows = len(next(iter(outputs.values())))
        results: list[dict] = [{} for _ in range(rows)]
        for name in self.names:
            values = np.asarray(outputs[name])
            post = self.posts.get(name)
            for i in range(rows):
                results[i].update(self._row(name, values[i], post))
        return results

    @staticmethod
    def _row(name: str, row: np.ndarray, post) -> dict:
        if post is None:
            return {name: row.tolist()}
        values = row.astype(np.float64).ravel()
        if post.normalize:
            norm = np.linalg.norm(values)
            values = values / norm if norm > 0 else values
        if post.softmax:
            values = softmax(values)
        out: dict = {"probabilities" if post.softmax else name: values.tolist()}
        if post.labels or post.top_k:
            order = np.argsort(-values)[: max(post.top_k, 1)]
            label = (lambda k: post.labels[k]) if post.labels else str
            out["label"] = label(int(order[0]))
            out["score"] = float(values[order[0]])
            if post.top_k:
                out["top_k"] = [{"label": label(int(k)), "score": float(values[k])} for k in order]
        return out


def declaration(toml_path: Optional[Path] = None, labels_path: Optional[Path] = None,
                output: Optional[str] = None) -> Optional[dict]:
    """A user's processing for ``optimize --processing FILE.toml --labels FILE``, as the manifest
    declares it: ``[image]`` or ``[text]`` (a tokenizer path is relative to the TOML file) and
    ``[[outputs]]``; a labels file (one class per line) names the first output's classes."""
    if toml_path is None and labels_path is None:
        return None
    data: dict = {}
    if toml_path is not None:
        from ._io import read_toml

        toml_path = Path(toml_path)
        data = read_toml(toml_path, "processing file", "see the README's processing section")
        if "text" in data and "tokenizer" in data["text"]:
            data["text"]["tokenizer"] = str((toml_path.parent / data["text"]["tokenizer"]).resolve())
            data["text"].setdefault("sha256", "0" * 64)  # the real hash is taken when the file is bundled
    if labels_path is not None:
        labels_path = Path(labels_path)
        if not labels_path.is_file():
            raise EdgekitError(f"labels file {labels_path} does not exist", "one class name per line")
        labels = [line.strip() for line in labels_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not labels:
            raise EdgekitError(f"labels file {labels_path} is empty", "one class name per line")
        outputs = data.setdefault("outputs", [])
        if not outputs:
            outputs.append({"output": output or ""})
        outputs[0].update(labels=labels, softmax=outputs[0].get("softmax", True),
                          top_k=outputs[0].get("top_k", min(5, len(labels))))
    return data
