"""The bundle manifest: one typed document, written by optimize and package, read by the runtime.

Every field is checked on the way in (``Manifest.parse``), so the runtime never meets a manifest
whose paths leave the bundle, whose shapes are not shapes, or whose self-test bar is outside
[0, 1]. Schema history: 1 had no golden sha256; 2 pins golden.npz and marks inputs that must be
finite; 3 adds the model's own pre- and post-processing (pictures and text in, labels and scores
out), with any tokenizer file pinned like every other file; 4 adds inputs that are not batch
first (``batch_axis``: 1 for an RNN state, null for none), fixed values (``value``), recurrent
states (``state_of``), and per-variant tensor layouts (a TFLite converted by onnx2tf takes NHWC
where its ONNX source took NCHW).
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Literal, Optional, Union

from ._schema import Document, SchemaError, field, from_dict, replace, to_dict
from .errors import BundleError
from .spec import DTYPES, elements, interface_fields

# 5: axes (dims that vary between calls and their ranges)
SCHEMA_VERSION = 5


def schema_needed(manifest: "Manifest") -> int:
    """The oldest schema that holds ``manifest``: a bundle without varying axes is written as 4,
    so that devices on an older edgekit keep taking it."""
    return SCHEMA_VERSION if manifest.axes else 4
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(BundleError):
    """A manifest that does not validate."""


def _bundle_path(value: str, what: str) -> None:
    """Paths in a manifest stay inside the bundle: relative, no '..', no backslashes."""
    path = PurePosixPath(value)
    if not value or value.startswith("/") or "\\" in value or ".." in path.parts or ":" in value:
        raise ValueError(f"{what} {value!r} must be a relative path inside the bundle")


class IOSpec(Document):
    name: str
    shape: tuple[Union[int, str], ...]
    dtype: str
    # Float inputs must be finite unless the model says otherwise: NaN fed to an int8 variant
    # comes back as finite, wrong numbers, so the runtime refuses it at the door.
    finite: Optional[bool] = None
    batch_axis: Optional[int] = 0
    value: Optional[tuple[float, ...]] = None
    state_of: Optional[str] = None

    def validate(self) -> None:
        if self.batch_axis is not None and not 0 <= self.batch_axis < max(1, len(self.shape)):
            raise ValueError(f"batch_axis {self.batch_axis} of {self.name!r} is outside its {len(self.shape)} dims")
        if self.value is not None and len(self.value) != elements(self.shape):
            raise ValueError(f"value of {self.name!r} has {len(self.value)} elements, its shape {list(self.shape)} "
                             f"holds {elements(self.shape)}")
        if not self.name or len(self.name) > 256:
            raise ValueError(f"tensor name {self.name!r} must be 1-256 characters")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        for dim in self.shape:
            if isinstance(dim, int) and dim < 0 or isinstance(dim, str) and not _NAME.match(dim):
                raise ValueError(f"shape {list(self.shape)} of {self.name!r}: dims are sizes >= 0 or names")

    @property
    def must_be_finite(self) -> bool:
        return self.finite if self.finite is not None else self.dtype.startswith("float")

    def to_dict(self) -> dict:
        data = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.finite is not None:
            data["finite"] = self.finite
        return data | interface_fields(self)


class Layout(Document):
    """How a variant's tensors are laid out against the model's: ``perm`` per tensor name, with
    variant_tensor = transpose(model_tensor, perm)."""

    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    outputs: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def validate(self) -> None:
        for name, perm in {**self.inputs, **self.outputs}.items():
            if sorted(perm) != list(range(len(perm))):
                raise ValueError(f"layout of {name!r}: {list(perm)} is not a permutation")


class ModelInfo(Document):
    name: str
    version: str = ""


class Variant(Document):
    id: str
    file: str
    format: str
    precision: str
    sha256: str
    runtime: str = "onnxruntime"
    provider: str = "cpu"
    target_runtime: Optional[str] = None
    layout: Optional[Layout] = None

    def validate(self) -> None:
        _bundle_path(self.file, "variant file")
        if not _SHA.match(self.sha256):
            raise ValueError(f"variant {self.id!r}: sha256 must be 64 lowercase hex digits")
        if not self.id or len(self.id) > 200:
            raise ValueError("variant ids are 1-200 characters")


class Golden(Document):
    file: str
    min_cosine: float = 0.99
    samples: int = 0
    sha256: Optional[str] = None

    def validate(self) -> None:
        _bundle_path(self.file, "golden file")
        if not 0.0 <= self.min_cosine <= 1.0:
            raise ValueError(f"min_cosine {self.min_cosine} must be within [0, 1]")
        if self.samples < 0:
            raise ValueError("samples must be >= 0")
        if self.sha256 is not None and not _SHA.match(self.sha256):
            raise ValueError("golden sha256 must be 64 lowercase hex digits")


class ImageInput(Document):
    """A picture to the tensor ``input``: decode (PNG/JPEG), grey or RGB, invert, resize to
    height x width, multiply by ``scale``, subtract ``mean`` and divide by ``std`` per channel,
    lay out as NCHW or NHWC. ``invert`` 'auto' turns dark-on-light pictures into light-on-dark
    when the border is bright (the digits data set draws light ink on black)."""

    input: str
    height: int
    width: int
    mode: Literal["L", "RGB"] = "RGB"
    scale: float = 1 / 255
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    invert: Literal["no", "yes", "auto"] = "no"
    resample: Literal["nearest", "box", "bilinear", "bicubic", "lanczos"] = "bilinear"

    def validate(self) -> None:
        if not (0 < self.height <= 8192 and 0 < self.width <= 8192):
            raise ValueError("height and width must be 1-8192")
        channels = 1 if self.mode == "L" else 3
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values and len(values) not in (1, channels):
                raise ValueError(f"{name} needs 1 or {channels} values for mode {self.mode}")
        if any(v == 0 for v in self.std):
            raise ValueError("std must not be 0")


class TextInput(Document):
    """Text to token tensors with a ``tokenizers`` JSON file shipped inside the bundle."""

    tokenizer: str
    sha256: str
    max_length: int
    ids: str = "input_ids"
    mask: Optional[str] = "attention_mask"
    type_ids: Optional[str] = None
    pad_to_max: bool = True  # models exported with a fixed sequence length need it

    def validate(self) -> None:
        _bundle_path(self.tokenizer, "tokenizer file")
        if not _SHA.match(self.sha256):
            raise ValueError("tokenizer sha256 must be 64 lowercase hex digits")
        if not 1 <= self.max_length <= 65536:
            raise ValueError("max_length must be 1-65536")


class AudioInput(Document):
    """Sound to frames of the tensor ``input``: mono, resampled to ``rate``, cut into frames of the
    input's length every ``hop`` samples (0: the frame length, no overlap). Silero VAD takes 576
    samples every 512: 64 of context from the frame before, then 512 new ones."""

    input: str
    rate: int = 16000
    hop: int = 0

    def validate(self) -> None:
        if not 1000 <= self.rate <= 384000:
            raise ValueError("rate must be 1000-384000 Hz")
        if self.hop < 0:
            raise ValueError("hop must be >= 0")


class OutputPost(Document):
    """What an output means: class names, softmax, the top k; or an embedding to normalise."""

    output: str
    labels: tuple[str, ...] = ()
    softmax: bool = False
    top_k: int = 0
    normalize: bool = False

    def validate(self) -> None:
        if self.top_k < 0 or (self.labels and self.top_k > len(self.labels)):
            raise ValueError(f"top_k {self.top_k} must be within 0-{len(self.labels) or 'the classes'}")


class Processing(Document):
    image: Optional[ImageInput] = None
    text: Optional[TextInput] = None
    outputs: tuple[OutputPost, ...] = ()
    audio: Optional[AudioInput] = None

    def validate(self) -> None:
        if sum(x is not None for x in (self.image, self.text, self.audio)) > 1:
            raise ValueError("a model takes pictures, text or sound, one of them")

    def files(self) -> list[str]:
        return [self.text.tokenizer] if self.text else []


class Axis(Document):
    """A dimension that varies between calls (a sentence's tokens, a text line's width): the sizes
    every variant accepts (``max`` None: no bound known) and the sizes the guard judged them on."""

    min: int = 1
    max: Optional[int] = None
    judged: tuple[int, ...] = ()  # the shortest and longest size in the evaluation data
    # Edges of the length buckets the server batches within (read off the data's lengths)
    buckets: tuple[int, ...] = ()

    def validate(self) -> None:
        if self.min < 1 or (self.max is not None and self.max < self.min):
            raise ValueError(f"sizes {self.min}-{self.max} are not a range of sizes >= 1")
        if list(self.buckets) != sorted(set(self.buckets)) or any(b < 1 for b in self.buckets):
            raise ValueError("buckets are increasing sizes >= 1")
        if self.judged and (len(self.judged) != 2 or self.judged[0] > self.judged[1]):
            raise ValueError("judged is the [shortest, longest] size")


class Manifest(Document):
    schema_version: int
    model: ModelInfo
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]
    variants: tuple[Variant, ...]
    target: str = ""
    created: str = ""
    toolchain: dict[str, str] = field(default_factory=dict)
    golden: Optional[Golden] = None
    processing: Optional[Processing] = None
    # The dynamic dims besides the batch, by name (a shape's "sequence"): which axes vary and how far
    axes: dict[str, Axis] = field(default_factory=dict)

    def validate(self) -> None:
        if self.schema_version < 1:
            raise ValueError(f"schema_version must be a positive integer, got {self.schema_version}")
        if not self.variants:
            raise ValueError("lists no variants")
        ids = [v.id for v in self.variants]
        if len(set(ids)) != len(ids):
            raise ValueError(f"variant ids repeat: {ids}")
        if not self.inputs or not self.outputs:
            raise ValueError("needs at least one input and one output")
        names = [s.name for s in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"input names repeat: {names}")
        if self.processing is not None:
            self._check_processing(set(names), {s.name: s for s in self.outputs})
        if self.axes and self.schema_version < 5:
            raise ValueError(f"axes need schema_version 5, the manifest says {self.schema_version}")
        dims = {d for s in self.inputs for d in s.shape if isinstance(d, str)}
        unknown = sorted(set(self.axes) - dims)
        if unknown:
            raise ValueError(f"axes {', '.join(unknown)} name no dim of the inputs ({', '.join(sorted(dims)) or 'none'})")

    def _check_processing(self, inputs: set[str], outputs: dict) -> None:
        p = self.processing
        fed = ([p.image.input] if p.image else []) + ([p.audio.input] if p.audio else []) + (
            [n for n in (p.text.ids, p.text.mask, p.text.type_ids) if n] if p.text else [])
        unknown = [n for n in fed if n not in inputs]
        if unknown:
            raise ValueError(f"processing feeds {', '.join(unknown)}, which the model does not take")
        for post in p.outputs:
            if post.output not in outputs:
                raise ValueError(f"processing describes output {post.output!r}, which the model does not have")
            last = outputs[post.output].shape[-1] if outputs[post.output].shape else None
            if post.labels and isinstance(last, int) and len(post.labels) != last:
                raise ValueError(f"{len(post.labels)} labels for output {post.output!r} of {last} classes")

    @classmethod
    def parse(cls, data, origin: str = "manifest.json") -> "Manifest":
        """Validate a decoded manifest; errors name the key and say what was expected."""
        if not isinstance(data, dict):
            raise ManifestError(f"{origin} must hold a JSON object, not {type(data).__name__}",
                                "rebuild the bundle with edgekit package")
        version = data.get("schema_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise ManifestError(f"{origin} uses bundle schema {version}, newer than this runtime reads "
                                f"({SCHEMA_VERSION})", "upgrade edgekit on the device")
        try:
            return from_dict(cls, data)
        except SchemaError as exc:
            raise ManifestError(f"{origin}: {exc}", "rebuild the bundle with edgekit package") from None

    @classmethod
    def loads(cls, body: bytes, origin: str = "manifest.json") -> "Manifest":
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise ManifestError(f"{origin} is not valid JSON ({exc})", "rebuild the bundle with edgekit package") from None
        return cls.parse(data, origin)

    def files(self) -> list[str]:
        """Every file the bundle must hold besides manifest.json and its signature."""
        return ([v.file for v in self.variants] + ([self.golden.file] if self.golden else [])
                + (self.processing.files() if self.processing else []))

    def replace(self, **changes) -> "Manifest":
        """A changed copy, validated again as a whole (a new field must fit the others)."""
        return Manifest.parse(replace(self, **changes).to_dict())

    def to_dict(self) -> dict:
        data = to_dict(self)
        data["inputs"] = [s.to_dict() for s in self.inputs]
        data["outputs"] = [s.to_dict() for s in self.outputs]
        if not data["axes"]:
            data.pop("axes")
        for optional in ("golden", "processing"):
            if data[optional] is None:
                data.pop(optional)
        return data

    def dumps(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2).encode()
