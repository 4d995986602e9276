"""One loader for every command: ONNX, TFLite, PyTorch factories, .pt2 files and built-ins."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..errors import ModelLoadError
from ..spec import Model, TensorSpec, dtype_given, parse_input_spec

BUILTIN_PREFIX = "edgekit:"
DEFAULT_MODEL = "edgekit:digits-cnn"


def load_model(ref: Optional[str] = None, inputs: Sequence[str | TensorSpec] = (),
               batch_axes: Sequence[str] = (), states: Sequence[str] = ()) -> Model:
    """Load ``ref`` (default: the demo model). ``inputs`` are ``--input NAME:SHAPE[:DTYPE][:=VALUE]``
    specs, ``batch_axes`` ``--batch-axis NAME:K`` and ``states`` ``--state IN=OUT`` (see
    :mod:`edgekit.models.interface`)."""
    ref = ref or DEFAULT_MODEL
    overrides = [s if isinstance(s, TensorSpec) else parse_input_spec(s) for s in inputs]
    names = [o.name for o in overrides]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ModelLoadError(f"--input {repeated[0]} is given more than once", "give each input once")
    # A dtype the user did not write is not a claim about the model: keep the file's own.
    explicit = {s.name for s in inputs if isinstance(s, TensorSpec)} | {
        s.name for s, raw in zip(overrides, inputs) if isinstance(raw, str) and dtype_given(raw)}
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
