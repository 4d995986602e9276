"""``edgekit inspect``: what edgekit sees in a model."""

from __future__ import annotations

import click

from ..models import describe, load_model
from .common import console, human_bytes, human_count, input_option, interface_options, json_option, print_json, table


@click.command("inspect")
@click.argument("model", required=False)
@input_option
@interface_options
@json_option
def inspect_model(model: str | None, inputs: tuple[str, ...], batch_axes: tuple[str, ...], states: tuple[str, ...],
                  as_json: bool) -> None:
    """Show a model's format, inputs and outputs, parameters, size, opset and op types.

    MODEL is a .onnx, .tflite or .pt2 file, a bundle (.ekb: its manifest), a PyTorch factory (package.module:function or
    path/file.py:function returning (module, example_inputs)), or a built-in such as
    edgekit:minilm. Default: the demo model edgekit:digits-cnn.

    \b
    Example:
      edgekit inspect edgekit:minilm
      edgekit inspect digits.ekb                      # a bundle: model, version, variants, interface
      edgekit inspect model.onnx --input input:batchx3x224x224 --json
      edgekit inspect silero_vad.onnx --input input:1x576 --input sr:int64:=16000   # batch axes, state
    """
    if model and model.endswith(".ekb"):  # a bundle is not a model file: its manifest says what it holds
        return _inspect_bundle(model, as_json)
    info = describe(load_model(model, inputs, batch_axes, states))
    if as_json:
        print_json(info)
        return
    out = console()
    out.print(f"[bold]{info['name']}[/bold]  {info['format']}  from {info['source']}")
    summary = [
        ["file size", human_bytes(info["file_size_bytes"])],
        ["parameters", f"{human_count(info['parameters'])} "
                       f"({', '.join(f'{k}: {human_count(v)}' for k, v in info['parameters_by_dtype'].items())})"],
        ["opset", info.get("opset") or "-"],
        ["runtime / producer", info.get("runtime") or info.get("producer") or "-"],
        ["task", info["task"]],
    ]
    out.print(table(None, ["", ""], summary))
    rows = [[kind, t["name"], "x".join(map(str, t["shape"])) or "scalar", t["dtype"], ", ".join(t["dynamic"]) or "-",
             _samples(t)] for kind in ("input", "output") for t in info[f"{kind}s"]]
    out.print(table("Interface", ["", "name", "shape", "dtype", "dynamic dims", "samples"], rows))
    ops = info.get("ops") or {}
    if ops:
        out.print(table(f"Op types ({sum(ops.values())} ops)", ["op", "count"], [[k, v] for k, v in ops.items()]))
    if info.get("ops_error"):
        out.print(f"op histogram unavailable: {info['ops_error']}")


def _samples(tensor: dict) -> str:
    """How the tensor takes samples (edgekit.models.interface): its batch axis, a fixed value, a state."""
    if tensor.get("value") is not None:
        return f"fixed = {tensor['value'][0] if len(tensor['value']) == 1 else tensor['value']}"
    axis = tensor.get("batch_axis", 0)
    text = "no batch axis (fed as is)" if axis is None else f"batch on dim {axis}"
    return text + (f"; state <- {tensor['state_of']}" if tensor.get("state_of") else "")


def _inspect_bundle(path: str, as_json: bool) -> None:
    """A bundle's manifest as read by the device runtime (sizes and hashes checked, nothing loaded)."""
    from ..bundle import read_manifest

    manifest = read_manifest(path)
    if as_json:
        print_json(manifest.to_dict())
        return
    out = console()
    out.print(f"[bold]{manifest.model.name}[/bold]  version {manifest.model.version or '-'}  bundle for "
              f"{manifest.target or '-'}, made {manifest.created or '-'}")
    out.print(table("Variants, in the order the runtime tries them", ["id", "format", "precision", "runtime", "sha256"],
                    [[v.id, v.format, v.precision, f"{v.runtime} ({v.provider})", v.sha256[:12]]
                     for v in manifest.variants]))
    rows = [[kind, s.name, "x".join(map(str, s.shape)) or "scalar", s.dtype]
            for kind, specs in (("input", manifest.inputs), ("output", manifest.outputs)) for s in specs]
    out.print(table("Interface", ["", "name", "shape", "dtype"], rows))
    processing = manifest.processing
    kinds = [k for k in ("image", "text", "audio") if processing is not None and getattr(processing, k, None)]
    out.print(f"processing: {', '.join(kinds) or 'none (tensors in, tensors out)'}; golden self-test: "
              f"{'yes' if manifest.golden else 'no'}")
