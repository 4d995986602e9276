"""One loader for every command: ONNX, TFLite, PyTorch factories, .pt2 files and built-ins."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..errors import ModelLoadError
from ..spec import InputOverride, Model, TensorSpec

BUILTIN_PREFIX = "edgekit:"
DEFAULT_MODEL = "edgekit:digits-cnn"


def _override(item) -> InputOverride:
    if isinstance(item, InputOverride):
        return item
    return InputOverride(item) if isinstance(item, TensorSpec) else InputOverride.parse(item)


def load_model(ref: Optional[str] = None, inputs: Sequence[str | TensorSpec | InputOverride] = (),
               batch_axes: Sequence = (), states: Sequence = ()) -> Model:
    """Load ``ref`` (default: the demo model). ``inputs`` are ``--input`` specs (parsed, as the CLI
    passes them, or their text ``NAME:SHAPE[:DTYPE][:=VALUE]``), ``batch_axes`` ``--batch-axis``
    (``NAME:K`` or (name, axis)) and ``states`` ``--state`` (``IN=OUT`` or (in, out)); see
    :mod:`edgekit.models.interface`."""
    ref = ref or DEFAULT_MODEL
    given = [_override(s) for s in inputs]
    overrides = [g.spec for g in given]
    names = [o.name for o in overrides]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ModelLoadError(f"--input {repeated[0]} is given more than once", "give each input once")
    explicit = {g.spec.name for g in given if g.dtype_given}
    if ref.startswith(BUILTIN_PREFIX):
        from ..zoo import load_builtin

        return load_builtin(ref[len(BUILTIN_PREFIX):])
    path = Path(ref)
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".tflite", ".pt2") or path.exists():
        if not path.exists():
            raise ModelLoadError(f"model file {path} does not exist", "check the path")
        if path.is_dir():
            raise ModelLoadError(f"{path} is a directory, not a model file", "pass the .onnx or .tflite inside it")
        from .interface import parse_batch_axes, parse_states

        return _load_file(path, ref, overrides, explicit, parse_batch_axes(batch_axes), parse_states(states))
    if ":" in ref:
        from .torch_model import load_factory

        return load_factory(ref, overrides)
    raise ModelLoadError(
        f"cannot tell what kind of model {ref!r} is",
        "pass a .onnx, .tflite or .pt2 file, a factory module:function, or edgekit:digits-cnn",
    )


def _load_file(path: Path, ref: str, overrides: list[TensorSpec], explicit: set[str] = frozenset(),
               batch_axes: Optional[dict] = None, states: Optional[dict] = None) -> Model:
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path} is empty", "re-export the model")
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".tflite", ".pt2"):
        head = path.read_bytes()[:8]
        suffix = ".tflite" if head[4:8] == b"TFL3" else ".pt2" if head[:2] == b"PK" else ".onnx"
    if suffix == ".onnx":
        from .onnx_model import load_onnx

        model = load_onnx(path, ref)
    elif suffix == ".tflite":
        from .tflite_model import load_tflite

        model = load_tflite(path, ref)
    else:
        from .torch_model import load_pt2

        return load_pt2(path, ref, overrides)
    from .interface import name_dims, resolve

    graph_in = [s.with_(shape=name_dims(s.name, s.shape)) for s in model.inputs]
    graph_out = [s.with_(shape=name_dims(s.name, s.shape)) for s in model.outputs]
    model.inputs, model.outputs, model.meta["batch_axis_why"] = resolve(
        graph_in, graph_out, overrides, explicit, str(path), batch_axes, states)
    return model


def describe(model: Model) -> dict:
    """What ``edgekit inspect`` shows: interface, parameters, size, opset and op histogram."""
    if model.format == "onnx":
        from .onnx_model import describe_onnx

        details = describe_onnx(model)
    elif model.format == "tflite":
        from .tflite_model import describe_tflite

        details = describe_tflite(model)
    else:
        from .torch_model import describe_torch

        details = describe_torch(model)
    size = model.path.stat().st_size if model.path else None
    return {
        "name": model.name,
        "source": model.source,
        "format": model.format,
        "task": model.task,
        "file_size_bytes": size,
        "inputs": [s.to_dict() | {"dynamic": list(s.dynamic_dims)} for s in model.inputs],
        "outputs": [s.to_dict() | {"dynamic": list(s.dynamic_dims)} for s in model.outputs],
        **details,
    }
