"""Load and describe TFLite (LiteRT) files with ai-edge-litert, or tflite_runtime on old devices."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import EdgekitError, MissingDependencyError, ModelLoadError, first_line
from ..spec import Model, TensorSpec

_WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D"}
TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier at bytes 4..8 of every .tflite


def interpreter_class():
    """LiteRT's Interpreter: ai-edge-litert first, tflite_runtime where only it is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
        except ImportError:
            raise MissingDependencyError("ai-edge-litert", "tflite", "running a .tflite model") from None
        import numpy

        if int(numpy.__version__.split(".")[0]) >= 2:
            # Its last release (2.14) is built against NumPy 1 and fails with a bare SystemError.

            raise EdgekitError(f"tflite_runtime cannot run with NumPy {numpy.__version__}",
                               "install ai-edge-litert (pip install 'edgekit[litert]'), or numpy<2")
    return Interpreter


def runtime_name() -> str:
    module = interpreter_class().__module__.split(".")[0]
    try:
        from importlib.metadata import version

        return f"{module} {version(module.replace('_', '-'))}"
    except Exception:  # version metadata is cosmetic
        return module


def open_interpreter(path: Path, num_threads: int | None = None, delegates: bool = True):
    """Check the flatbuffer identifier first: handing random bytes to the C++ side can crash.

    ``delegates=False`` keeps XNNPACK out, so the op list shows the model's own ops rather than
    one DELEGATE node."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise ModelLoadError(
            f"{path} is not a TFLite flatbuffer (no 'TFL3' identifier)",
            "the file may be truncated or not a .tflite model; re-convert it",
        )
    cls = interpreter_class()
    kwargs = {}
    if not delegates:
        resolver = getattr(sys.modules[cls.__module__], "OpResolverType", None)
        if resolver is not None:
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    from .._quiet import native_quiet

    try:
        with native_quiet():
            interpreter = cls(model_path=str(path), num_threads=num_threads, **kwargs)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"{path} cannot be loaded by LiteRT: {first_line(exc)}",
            "the file may be truncated or use ops this runtime lacks; re-convert it",
        ) from None
    return interpreter


def _spec(detail: dict) -> TensorSpec:
    sig = detail.get("shape_signature")
    shape = sig if sig is not None and len(sig) else detail["shape"]
    dims = tuple(int(d) if d >= 0 else ("batch" if i == 0 else f"d{i}") for i, d in enumerate(shape))
    return TensorSpec(detail["name"], dims, np.dtype(detail["dtype"]).name)


def load_tflite(path: Path, source: str) -> Model:
    interpreter = open_interpreter(path, delegates=False)
    return Model(
        name=path.stem, format="tflite", source=source, path=path,
        inputs=[_spec(d) for d in interpreter.get_input_details()],
        outputs=[_spec(d) for d in interpreter.get_output_details()],
        meta={"interpreter": interpreter},
    )


def describe_tflite(model: Model) -> dict:
    interpreter = model.meta.get("interpreter") or open_interpreter(model.path, delegates=False)
    ops = interpreter._get_ops_details()  # the only public-enough view of the op list
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    produced = {o for op in ops for o in op["outputs"]}
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    constants = set()
    for op in ops:
        for i in op["inputs"]:
            if i < 0 or i in produced or i in graph_inputs or i not in tensors:
                continue
            # Integer constants are shapes, axes and permutations, except the int32 biases of
            # quantised convolutions and fully connected layers.
            integer = np.dtype(tensors[i]["dtype"]).name in ("int32", "int64")
            if integer and op["op_name"] not in _WEIGHTED_OPS:
                continue
            constants.add(i)
    params = 0
    by_dtype: Counter = Counter()
    for index in constants:
        tensor = tensors.get(index)
        if tensor is None:
            continue
        count = int(np.prod(tensor["shape"])) if len(tensor["shape"]) else 1
        params += count
        by_dtype[np.dtype(tensor["dtype"]).name] += count
    return {
        "parameters": params,
        "parameters_by_dtype": dict(by_dtype),
        "opset": None,
        "runtime": runtime_name(),
        "ops": dict(Counter(op["op_name"] for op in ops).most_common()),
    }
