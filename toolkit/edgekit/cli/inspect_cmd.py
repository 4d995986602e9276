"""``edgekit inspect``: what edgekit sees in a model."""

from __future__ import annotations

import click

from ..models import describe, load_model
from .common import console, human_bytes, human_count, input_option, json_option, print_json, table


@click.command("inspect")
@click.argument("model", required=False)
@input_option
@json_option
def inspect_model(model: str | None, inputs: tuple[str, ...], as_json: bool) -> None:
    """Show a model's format, inputs and outputs, parameters, size, opset and op types.

    MODEL is a .onnx, .tflite or .pt2 file, a PyTorch factory (package.module:function or
    path/file.py:function returning (module, example_inputs)), or a built-in such as
    edgekit:minilm. Default: the demo model edgekit:digits-cnn.

    \b
    Example:
      edgekit inspect edgekit:minilm
      edgekit inspect model.onnx --input input:batchx3x224x224 --json
    """
    info = describe(load_model(model, inputs))
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
    rows = [["input", t["name"], "x".join(map(str, t["shape"])), t["dtype"], ", ".join(t["dynamic"]) or "-"]
            for t in info["inputs"]]
    rows += [["output", t["name"], "x".join(map(str, t["shape"])), t["dtype"], ", ".join(t["dynamic"]) or "-"]
             for t in info["outputs"]]
    out.print(table("Interface", ["", "name", "shape", "dtype", "dynamic dims"], rows))
    ops = info.get("ops") or {}
    if ops:
        out.print(table(f"Op types ({sum(ops.values())} ops)", ["op", "count"], [[k, v] for k, v in ops.items()]))
    if info.get("ops_error"):
        out.print(f"op histogram unavailable: {info['ops_error']}")
