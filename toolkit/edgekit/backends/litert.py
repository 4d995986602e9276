"""LiteRT (TFLite) interpreters: name mapping, dtype casts and fixed-batch models.

litert-torch names inputs ``serving_default_args_N`` and turns int64 into int32; onnx2tf lays
images out NHWC where the ONNX source took NCHW and folds fixed inputs (a sample rate) into the
graph. This backend maps the model's own names onto the interpreter's (by signature name where
they match, else by position), transposes by the recorded ``layout`` and casts, so callers feed
what the source model takes and get its outputs back in its layout.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import EdgekitError, MissingDependencyError, ModelLoadError, first_line
from ..dataset import first_along
from ..spec import TensorSpec
from .base import Session, SessionOptions, pad_sequence

_ARG = re.compile(r"args_(\d+)$")
_BUCKET = re.compile(r"len(\d+)$")  # convert.tflite_export.SIGNATURE: one signature per sequence length
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


def _output_order(key: str):
    """output_0, output_1, ... in number order (output_10 after output_9)."""
    match = re.search(r"(\d+)$", key)
    return (int(match.group(1)) if match else 0, key)


def _spec(detail: dict) -> TensorSpec:
    sig = detail.get("shape_signature")
    shape = sig if sig is not None and len(sig) else detail["shape"]
    dims = tuple(int(d) if d >= 0 else ("batch" if i == 0 else f"d{i}") for i, d in enumerate(shape))
    return TensorSpec(detail["name"], dims, np.dtype(detail["dtype"]).name)


class LiteRTSession(Session):
    format = "tflite"

    def __init__(self, path: Path, options: SessionOptions, model=None, layout: Optional[dict] = None):
        if options.provider not in ("cpu", "xnnpack"):
            raise EdgekitError(f"LiteRT has no provider {options.provider!r} here", "use cpu or xnnpack")
        # XNNPACK is LiteRT's default CPU delegate; "cpu" keeps it, as on devices.
        self.interpreter = open_interpreter(Path(path), num_threads=options.threads)
        details = self.interpreter.get_input_details()
        if all(_ARG.search(d["name"]) for d in details):
            details = sorted(details, key=lambda d: int(_ARG.search(d["name"]).group(1)))
        self._out = self.interpreter.get_output_details()
        details = self._by_signature(details, model)
        self._in = details

        # a fixed input the converter folded into the graph is not among the interpreter's
        fed = [s for s in model.inputs if s.is_data or s.state_of] if model is not None else []
        if model is not None and len(fed) != len(details):
            fed = list(model.inputs)
        names = [s.name for s in fed] if model is not None and len(fed) == len(details) else None
        self.inputs = [_spec(d) for d in details]
        if names:
            self.inputs = [type(s)(n, s.shape, s.dtype) for n, s in zip(names, self.inputs)]
        out_names = [s.name for s in model.outputs] if model is not None and len(model.outputs) == len(self._out) else None
        self.outputs = [_spec(d) for d in self._out]
        if out_names:
            self.outputs = [type(s)(n, s.shape, s.dtype) for n, s in zip(out_names, self.outputs)]
        self._names = [s.name for s in self.inputs]
        layout = layout or {}
        self._perm_in = {n: p for n, p in (layout.get("inputs") or {}).items() if n in self._names}
        self._perm_out = [(layout.get("outputs") or {}).get(s.name) for s in self.outputs]
        self.fixed_batch = all(d["shape_signature"][0] > 0 for d in details if len(d["shape_signature"]))
        self._shapes = {d["index"]: tuple(d["shape"]) for d in details}
        self.requested_provider = options.provider
        ops = {op["op_name"] for op in self.interpreter._get_ops_details()}
        self.active_provider = "xnnpack" if "DELEGATE" in ops else "cpu"
        self.buckets = self._bucket_runners()
        # the axis the signatures differ along, in the source's layout: a token sequence's (1), or
        # the one named dim of the source's input (a text line's width, axis 3 of NCHW)
        self._axis, self._varying_out = 1, [None] * len(self.outputs)
        if self.buckets:  # the file takes any length up to its longest bucket, one row at a time
            source = {s.name: s for s in model.inputs} if model is not None else {}
            named = [i for i, d in enumerate(source[self._names[0]].shape) if isinstance(d, str) and i > 0] \
                if self._names and self._names[0] in source else []
            self._axis = named[0] if len(named) == 1 else 1
            dim = source[self._names[0]].shape[self._axis] if named else "sequence"
            self.inputs = [s.with_(shape=tuple(dim if i == self._axis else d for i, d in enumerate(
                source[s.name].shape if s.name in source else s.shape))) if len(s.shape) > self._axis else s
                for s in self.inputs]
            outs = {s.name: s for s in model.outputs} if model is not None else {}
            # per output, the axis that follows the length (a recogniser's steps), or None (pooled)
            self._varying_out = [next((i for i, d in enumerate(outs[s.name].shape) if i > 0 and isinstance(d, str)),
                                      None) if s.name in outs else None for s in self.outputs]

    def _bucket_runners(self) -> dict[int, object]:
        """length -> signature runner, for a file with one signature per sequence length."""
        signatures = self.interpreter.get_signature_list()
        sizes = {key: _BUCKET.fullmatch(key) for key in signatures}
        if len(signatures) < 2 or not all(sizes.values()):
            return {}
        return {int(match.group(1)): self.interpreter.get_signature_runner(key) for key, match in sizes.items()}

    def bucketed(self, feeds, row: int = 0) -> tuple[int, dict[str, np.ndarray]]:
        """(bucket, the signature's arguments) for one row of ``feeds``: padded with zeros to the
        smallest bucket that holds it (ids and mask: the mask hides what was added; a text line:
        background), laid out, named and typed as that signature takes them."""
        length = feeds[self._names[0]].shape[self._axis]
        bucket = next((b for b in sorted(self.buckets) if b >= length), None)
        if bucket is None:
            raise EdgekitError(f"a sequence of {length} is longer than this file's longest signature "
                               f"({max(self.buckets)})", "truncate inputs to the bundle's max_length")
        details = self.buckets[bucket].get_input_details()
        args = {}
        for position, name in enumerate(self._names):
            key = name if name in details else f"args_{position}" if f"args_{position}" in details else list(details)[position]
            value = self._arrange(name, pad_sequence(feeds[name][row:row + 1], bucket, self._axis))
            args[key] = value.astype(details[key]["dtype"], copy=False)
        return bucket, args

    def _run_bucketed(self, feeds) -> list[np.ndarray]:
        """Each row run by the signature of the smallest bucket that holds it. An output that
        follows the length (a recogniser's steps) is cut back in proportion to the row's own length,
        so that it has the source's shape; pooled outputs (a sentence embedding) are as they are."""
        rows = []
        for i in range(len(feeds[self._names[0]])):
            length = feeds[self._names[0]].shape[self._axis]
            bucket, args = self.bucketed(feeds, i)
            got = self.buckets[bucket](**args)
            names = [o.name for o in self.outputs]
            keys = names if set(names) <= set(got) else sorted(got, key=_output_order)
            outs = self._restore([np.asarray(got[k]) for k in keys])
            rows.append([o if axis is None else _cut_in_proportion(o, length, bucket, axis)
                         for o, axis in zip(outs, self._varying_out)])
        return [np.concatenate(parts) for parts in zip(*rows)]

    def _by_signature(self, details: list, model) -> list:
        """Input details in the source model's order where the signature names its inputs."""
        if model is None:
            return details
        try:
            signature = next(iter(self.interpreter._get_full_signature_list().values()))["inputs"]
        except (StopIteration, AttributeError, KeyError):
            return details
        names = [s.name for s in model.inputs if s.name in signature]
        if not names or len(names) != len(details):
            return details
        index = {d["index"]: d for d in details}
        return [index[signature[n]] for n in names]

    def _arrange(self, name: str, value: np.ndarray) -> np.ndarray:
        perm = self._perm_in.get(name)
        return np.ascontiguousarray(np.transpose(value, perm)) if perm else value

    def _restore(self, outputs: list) -> list:
        return [np.transpose(v, np.argsort(p)) if p else v for v, p in zip(outputs, self._perm_out)]

    def prepared(self, feeds) -> list[tuple[dict, np.ndarray]]:
        """(input detail, array as the interpreter takes it) for each input: for tools that run
        their own interpreter of this file (sensitivity, calibration)."""
        rows = []
        for name, detail in zip(self._names, self._in):
            value = self._arrange(name, feeds[name])
            rows.append((detail, value if value.dtype == detail["dtype"] else _to_input(value, detail)))
        return rows

    def _invoke(self, feeds):
        for name, detail in zip(self._names, self._in):
            value = self._arrange(name, feeds[name])
            if value.dtype != detail["dtype"]:
                value = _to_input(value, detail)
            if self._shapes[detail["index"]] != value.shape:  # a dynamic batch changed size
                self.interpreter.resize_tensor_input(detail["index"], value.shape)
                self.interpreter.allocate_tensors()
                self._shapes[detail["index"]] = value.shape
            self.interpreter.set_tensor(detail["index"], value)
        self.interpreter.invoke()
        return self._restore([_from_output(self.interpreter.get_tensor(d["index"]), d) for d in self._out])

    def bind(self, feeds):
        if self.buckets:
            return lambda: self._run_bucketed(feeds)
        batch = len(feeds[self._names[0]]) if self._names else 1
        if self.fixed_batch and batch != self._shapes[self._in[0]["index"]][0]:
            return lambda: self.run(feeds)
        self._invoke(feeds)  # resizes once if needed
        interpreter = self.interpreter
        pairs = [(d["index"], value) for d, value in self.prepared(feeds)]
        outputs = [d["index"] for d in self._out]
        restore = self._restore if any(self._perm_out) else None

        def call():
            for index, value in pairs:
                interpreter.set_tensor(index, value)
            interpreter.invoke()
            got = [interpreter.get_tensor(i) for i in outputs]
            return restore(got) if restore else got

        return call

    def run(self, feeds):
        if self.buckets:
            return self._run_bucketed(feeds)
        batch = len(feeds[self._names[0]]) if self._names else 1
        if self.fixed_batch and batch != self._shapes[self._in[0]["index"]][0]:
            rows = [self._invoke({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(batch)]
            return [np.concatenate(parts) for parts in zip(*rows)]
        return self._invoke(feeds)


def _cut_in_proportion(value: np.ndarray, length: int, bucket: int, axis: int) -> np.ndarray:
    """``value`` cut along ``axis`` to ``length / bucket`` of its size: a bucket of 256 columns
    gives 64 steps; a line of 137 columns has 34 of its own."""
    return first_along(value, axis, max(1, value.shape[axis] * length // bucket))


def _to_input(value: np.ndarray, detail: dict) -> np.ndarray:
    """Cast to the interpreter's input type; float data into a full-integer model is quantised
    with the tensor's own scale and zero point (what the Edge TPU and int8 I/O models expect)."""
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail["quantization"]
    if dtype.kind in "iu" and scale and value.dtype.kind == "f":
        info = np.iinfo(dtype)
        return np.clip(np.round(value / scale) + zero, info.min, info.max).astype(dtype)
    return value.astype(dtype)


def _from_output(value: np.ndarray, detail: dict) -> np.ndarray:
    """Integer outputs of a quantised model come back as float32, dequantised."""
    scale, zero = detail["quantization"]
    if value.dtype.kind in "iu" and scale:
        return (value.astype(np.float32) - zero) * np.float32(scale)
    return value.copy()
