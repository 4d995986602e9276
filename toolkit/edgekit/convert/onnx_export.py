"""PyTorch -> ONNX with torch.onnx.export: the dynamo exporter first, TorchScript as fallback.

Each export is checked (onnx.checker, then onnxruntime against torch on the example inputs); a
result that fails the check counts as a failed export, so a silently wrong graph never passes.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._quiet import load_onnxruntime, quiet
from ..errors import ConversionError, require  # noqa: F401  (ConversionError: imported from here too)
from ..spec import Model

DEFAULT_OPSET = 18


@dataclass
class ExportResult:
    path: Path
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    seconds: float
    max_abs_diff: float  # onnxruntime vs torch on the example inputs
    fallback_reason: str = ""  # why the dynamo exporter was not used, when it was not

    def to_dict(self) -> dict:
        return {"file": self.path.name, "exporter": self.exporter, "opset": self.opset,
                "seconds": round(self.seconds, 2), "max_abs_diff": self.max_abs_diff,
                "fallback_reason": self.fallback_reason}


def _grown_examples(model: Model):
    """torch.export specialises dims of size 1, so dynamic dims get an example size of 2."""
    torch = require("torch", "torch", "convert", "ONNX export")
    grown = []
    for spec, tensor in zip(model.inputs, model.example_inputs):
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str) and tensor.shape[axis] == 1:
                tensor = torch.cat([tensor, tensor], dim=axis)
        grown.append(tensor)
    return tuple(grown)


def _first_line(exc: BaseException) -> str:
    """The most specific line of an exporter error: the failing op when it is named."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "## Exception summary" in lines:  # the dynamo exporter's report: the summary follows
        lines = lines[lines.index("## Exception summary") + 1:]
    for line in lines:
        if any(key in line for key in ("Unsupported", "not supported", "No ONNX function", "aten::", "aten.")):
            return f"{type(exc).__name__}: {line[:300]}"
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:300]}"


def _export_dynamo(model: Model, path: Path, opset: int) -> None:
    torch = require("torch", "torch", "convert", "ONNX export")
    dims: dict[str, object] = {}
    dynamic_shapes = []
    for spec in model.inputs:
        axes = {}
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str):
                dims.setdefault(dim, torch.export.Dim(dim, min=1, max=65536))
                axes[axis] = dims[dim]
        dynamic_shapes.append(axes or None)
    program = torch.onnx.export(
        model.module, _grown_examples(model), dynamo=True, opset_version=opset,
        input_names=[s.name for s in model.inputs],
        dynamic_shapes=tuple(dynamic_shapes) if dims else None, external_data=False, verbose=False,
    )
    program.save(str(path))
    _rename_outputs(path, [s.name for s in model.outputs])


def _export_torchscript(model: Model, path: Path, opset: int) -> None:
    torch = require("torch", "torch", "convert", "ONNX export")
    dynamic_axes = {}
    for spec in list(model.inputs) + list(model.outputs):
        axes = {axis: dim for axis, dim in enumerate(spec.shape) if isinstance(dim, str)}
        if axes:
            dynamic_axes[spec.name] = axes
    torch.onnx.export(
        model.module, model.example_inputs, str(path), dynamo=False, opset_version=min(opset, 17),
        input_names=[s.name for s in model.inputs], output_names=[s.name for s in model.outputs],
        dynamic_axes=dynamic_axes or None,
    )


def _rename_outputs(path: Path, names: list[str]) -> None:
    """Give graph outputs the model's names; an internal value already using a name is moved
    aside first (the dynamo exporter names values after modules, e.g. 'embedding')."""
    import onnx

    proto = onnx.load(str(path))
    graph = proto.graph
    values = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    values |= {t.name for t in graph.initializer}

    def rename(old: str, new: str) -> None:
        for node in graph.node:
            node.input[:] = [new if x == old else x for x in node.input]
            node.output[:] = [new if x == old else x for x in node.output]
        for coll in (graph.output, graph.value_info):
            for vi in coll:
                if vi.name == old:
                    vi.name = new

    for output, name in zip(list(graph.output), names):
        if output.name == name:
            continue
        if name in values:
            rename(name, f"{name}__internal")
        rename(output.name, name)
    onnx.save(proto, str(path))


def _verify(model: Model, path: Path) -> float:
    """Max abs difference between onnxruntime and torch on the example inputs."""
    import onnx

    ort = load_onnxruntime()
    torch = require("torch", "torch", "convert", "ONNX export")

    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    examples = _grown_examples(model)
    feeds = {s.name: t.numpy() for s, t in zip(model.inputs, examples)}
    got = session.run(None, feeds)
    with torch.no_grad():
        want = model.module(*examples)
    want = [want] if isinstance(want, torch.Tensor) else list(want.values()) if isinstance(want, dict) else list(want)
    return max(float(np.max(np.abs(g - w.numpy()))) if g.size else 0.0 for g, w in zip(got, want))


def exporters(model: Model) -> list[str]:
    """The exporters to try, in order: the dynamo exporter first, except for a transformer (an
    Embedding, LayerNorm or attention inside), whose graph onnxruntime's transformer fusions match
    only as TorchScript writes it (as Optimum exports): MiniLM's dynamo graph fused no Attention
    and no SkipLayerNormalization (201 nodes left), its TorchScript graph fuses both (64 nodes)."""
    kinds = {type(m).__name__ for m in model.module.modules()} if model.module is not None else set()
    if kinds & {"Embedding", "LayerNorm", "MultiheadAttention"} and not any(k.startswith("Conv") for k in kinds):
        return ["torchscript", "dynamo"]
    return ["dynamo", "torchscript"]


def export_onnx(model: Model, path: Path, opset: int = DEFAULT_OPSET, exporter: str = "auto",
                tolerance: float = 1e-3) -> ExportResult:
    """Export ``model`` (a PyTorch source) to ``path``; raises ConversionError with details."""
    if not model.is_torch:
        raise ConversionError(f"{model.source} is {model.format}, not a PyTorch source", "none",
                              hint="ONNX export needs a PyTorch model")
    path = Path(path)
    attempts = exporters(model) if exporter == "auto" else [exporter]
    failures: list[str] = []
    for name in attempts:
        start = time.perf_counter()
        try:
            with quiet():
                (_export_dynamo if name == "dynamo" else _export_torchscript)(model, path, opset)
                diff = _verify(model, path)
        except Exception as exc:  # every exporter failure is reported, then the next one is tried
            failures.append(f"{name}: {_first_line(exc)}")
            path.unlink(missing_ok=True)
            continue
        if not np.isfinite(diff) or diff > tolerance:
            failures.append(f"{name}: output differs from torch by {diff:.3g} (> {tolerance:g})")
            path.unlink(missing_ok=True)
            continue
        import onnx

        used_opset = next(i.version for i in onnx.load(str(path), load_external_data=False).opset_import
                          if i.domain in ("", "ai.onnx"))
        return ExportResult(path, name, used_opset, time.perf_counter() - start, diff,
                            fallback_reason="; ".join(failures))
    raise ConversionError(
        f"ONNX export of {model.name} failed: {' | '.join(failures)}",
        exporter=attempts[-1], detail="\n".join(failures),
        hint="rerun with --debug for the exporter's log; unsupported ops must be rewritten or registered",
    )
