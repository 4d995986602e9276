"""What edgekit knows about a model's interface: tensor specs and the loaded-model record."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union


from .errors import ModelLoadError

Dim = Union[int, str]  # an int is fixed; a str names a dynamic dimension ("batch", "seq")

# The tensor dtypes edgekit carries, defined once: model interfaces, the bundle's manifest and the
# device's log records all check against this.
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
# ... and the other names people write for them (--input x:1x3:fp16).
_DTYPES = {**{d: d for d in DTYPES}, "fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16",
           "long": "int64", "int": "int32"}


def normalise_dtype(name: str) -> str:
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise ModelLoadError(
            f"unknown dtype {name!r}", f"use one of {', '.join(sorted(set(_DTYPES.values())))}"
        ) from None


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str  # a numpy dtype name
    # Where the samples of a batch lie: 0 for most tensors, 1 for an RNN state (layers x batch x
    # width), None for an input that has none (a scalar such as a sample rate, a fixed table):
    # those are fed as they are with every batch, never stacked.
    batch_axis: Optional[int] = 0
    # A fixed value (flattened, in the spec's shape) fed with every call: --input sr:int64:=16000
    value: Optional[tuple] = None
    # For a recurrent state input: the output fed back into it at the next step of a sequence.
    state_of: Optional[str] = None

    @property
    def dynamic_dims(self) -> tuple[str, ...]:
        return tuple(d for d in self.shape if isinstance(d, str))

    @property
    def sample_shape(self) -> tuple[Dim, ...]:
        """The shape of one sample: the spec's shape without its batch axis."""
        if self.batch_axis is None:
            return self.shape
        return self.shape[:self.batch_axis] + self.shape[self.batch_axis + 1:]

    @property
    def is_data(self) -> bool:
        """Whether samples of this input come from the data (not a fixed value or a fed-back state)."""
        return self.value is None and self.state_of is None

    def fixed_value(self):
        import numpy as np

        return np.asarray(self.value, dtype=self.dtype).reshape(self.concrete_shape())

    def with_(self, **changes) -> "TensorSpec":
        from dataclasses import replace

        return replace(self, **changes)

    def shape_str(self) -> str:
        return "x".join(str(d) for d in self.shape) or "scalar"

    def concrete_shape(self, dims: Optional[dict[str, int]] = None, default: int = 1) -> tuple[int, ...]:
        dims = dims or {}
        return tuple(d if isinstance(d, int) else dims.get(d, default) for d in self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype} | interface_fields(self)


def interface_fields(spec) -> dict[str, Any]:
    """How a tensor takes samples, where it differs from the usual (batch-first data): written only
    then, so that the manifests and reports of batch-first models read as they always did."""
    data: dict[str, Any] = {}
    if spec.batch_axis != 0:
        data["batch_axis"] = spec.batch_axis
    if spec.value is not None:
        data["value"] = list(spec.value)
    if spec.state_of is not None:
        data["state_of"] = spec.state_of
    return data


def elements(shape) -> int:
    """How many values a tensor of ``shape`` holds (0 where a dim is dynamic)."""
    size = 1
    for d in shape:
        size *= d if isinstance(d, int) else 0
    return size


MAX_DIM = 1 << 24  # a fixed dimension larger than this is a typo, not a model
# NAME:SHAPE[:DTYPE][:=VALUE], or NAME:DTYPE:=VALUE and NAME:=VALUE for a scalar
_INPUT_RE = re.compile(r"^(?P<name>[^:=]+):(?P<shape>[^:=]*)(?::(?P<dtype>[A-Za-z0-9]+))?(?::=(?P<value>.+))?$")
_VALUE_RE = re.compile(r"^(?P<name>[^:=]+):(?:(?P<dtype>[A-Za-z][A-Za-z0-9]*):)?=(?P<value>.+)$")


def _match_input(text: str):
    text = text.strip()
    match = _VALUE_RE.match(text)
    if match and (match["dtype"] is None or match["dtype"].lower() in _DTYPES):
        return {"name": match["name"], "shape": "", "dtype": match["dtype"], "value": match["value"]}
    match = _INPUT_RE.match(text)
    return match.groupdict() if match else None


def dtype_given(text: str) -> bool:
    """Whether an ``--input`` text names its dtype (else float32 is only a default)."""
    match = _match_input(text)
    return bool(match and match["dtype"])


def parse_input_spec(text: str) -> TensorSpec:
    """Parse ``NAME:SHAPE[:DTYPE][:=VALUE]``, e.g. ``input_ids:batchx128:int64`` (named dims are
    dynamic) or ``sr:int64:=16000`` (a scalar fed with a fixed value)."""
    match = _match_input(text)
    if not match:
        raise ModelLoadError(
            f"bad --input {text!r}", "expected NAME:SHAPE[:DTYPE] or NAME:[DTYPE:]=VALUE, e.g. input_ids:1x128:int64 "
            "or sr:int64:=16000"
        )
    dims: list[Dim] = []
    for part in match["shape"].split("x") if match["shape"] else []:
        part = part.strip()
        if part.isascii() and part.isdigit():
            if not 1 <= int(part) <= MAX_DIM:  # 0 rows, or 20 digits: a bundle that fails every call
                raise ModelLoadError(f"dimension {part} in --input {text!r} is not a size from 1 to {MAX_DIM:,}",
                                     "give the size the model takes, or a name (e.g. batch) for a dynamic one")
            dims.append(int(part))
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            dims.append(part)
        else:
            raise ModelLoadError(
                f"bad dimension {part!r} in --input {text!r}",
                "use numbers for fixed dims and names (e.g. batch) for dynamic ones, joined by x",
            )
    dtype = normalise_dtype(match["dtype"]) if match["dtype"] else "float32"
    value = None
    if match["value"] is not None:
        try:
            value = tuple(float(v) for v in match["value"].split(","))
        except ValueError:
            raise ModelLoadError(f"bad value in --input {text!r}",
                                 "give a number or a comma list of numbers after :=, e.g. sr:int64:=16000") from None
        if len(value) != elements(dims):
            raise ModelLoadError(f"--input {text!r} gives {len(value)} values for shape {'x'.join(map(str, dims)) or 'scalar'}",
                                 "give one value per element (a scalar takes one)")
    return TensorSpec(match["name"], tuple(dims), dtype, value=value)


@dataclass(frozen=True)
class InputOverride:
    """One ``--input``: its spec, and whether it names its dtype (a dtype left out is not a claim
    about the model: the file's own stays)."""

    spec: TensorSpec
    dtype_given: bool = True

    @classmethod
    def parse(cls, text: str) -> "InputOverride":
        return cls(parse_input_spec(text), dtype_given(text))


@dataclass
class Model:
    """A loaded model: its interface plus whatever the format needs to run or convert it."""

    name: str
    format: str  # "onnx", "tflite", "pytorch" (a factory or built-in) or "pt2"
    source: str  # what the user passed
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    path: Optional[Path] = None  # the file, for onnx / tflite / pt2
    module: Any = None  # torch.nn.Module for PyTorch sources
    example_inputs: Optional[tuple] = None  # tensors matching ``inputs`` (PyTorch sources)
    task: str = "generic"  # "classification", "embedding" or "generic"
    data_factory: Optional[Callable[[str], Any]] = None  # built-ins: split -> Dataset
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_torch(self) -> bool:
        return self.module is not None

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def builtin_data(self, split: str = "eval"):
        """The data a built-in model carries (``eval`` or ``calibration``), else None."""
        return self.data_factory(split) if self.data_factory else None
