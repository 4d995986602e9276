"""What edgekit knows about a model's interface: tensor specs and the loaded-model record."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union


from ..errors import ModelLoadError

Dim = Union[int, str]  # an int is fixed; a str names a dynamic dimension ("batch", "seq")

_DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32", "float16": "float16",
    "fp16": "float16", "half": "float16", "float64": "float64", "int64": "int64", "long": "int64",
    "int32": "int32", "int": "int32", "int8": "int8", "uint8": "uint8", "bool": "bool",
}


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

    @property
    def dynamic_dims(self) -> tuple[str, ...]:
        return tuple(d for d in self.shape if isinstance(d, str))

    def shape_str(self) -> str:
        return "x".join(str(d) for d in self.shape) or "scalar"

    def concrete_shape(self, dims: Optional[dict[str, int]] = None, default: int = 1) -> tuple[int, ...]:
        dims = dims or {}
        return tuple(d if isinstance(d, int) else dims.get(d, default) for d in self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


_INPUT_RE = re.compile(r"^(?P<name>[^:]+):(?P<shape>[^:]*)(?::(?P<dtype>[A-Za-z0-9]+))?$")


def dtype_given(text: str) -> bool:
    """Whether an ``--input`` text names its dtype (else float32 is only a default)."""
    match = _INPUT_RE.match(text.strip())
    return bool(match and match["dtype"])


def parse_input_spec(text: str) -> TensorSpec:
    """Parse ``NAME:SHAPE[:DTYPE]``, e.g. ``input_ids:batchx128:int64`` (named dims are dynamic)."""
    match = _INPUT_RE.match(text.strip())
    if not match:
        raise ModelLoadError(
            f"bad --input {text!r}", "expected NAME:SHAPE[:DTYPE], e.g. input_ids:1x128:int64"
        )
    dims: list[Dim] = []
    for part in match["shape"].split("x") if match["shape"] else []:
        part = part.strip()
        if part.isdigit():
            dims.append(int(part))
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            dims.append(part)
        else:
            raise ModelLoadError(
                f"bad dimension {part!r} in --input {text!r}",
                "use numbers for fixed dims and names (e.g. batch) for dynamic ones, joined by x",
            )
    dtype = normalise_dtype(match["dtype"]) if match["dtype"] else "float32"
    return TensorSpec(match["name"], tuple(dims), dtype)


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
