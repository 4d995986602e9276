"""PyTorch sources: a factory ``module:function`` / ``file.py:function``, or a torch.export .pt2.

torch is imported here only, and only when such a source is used.
"""

from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from .._hooks import import_callable
from ..errors import ModelLoadError, first_line, require
from ..spec import Model, TensorSpec


def _torch():
    return require("torch", "torch", "convert", "loading a PyTorch model")


def _as_example_tuple(example: Any, ref: str) -> tuple:
    torch = _torch()
    if isinstance(example, torch.Tensor):
        return (example,)
    if isinstance(example, (tuple, list)) and example and all(isinstance(t, torch.Tensor) for t in example):
        return tuple(example)
    raise ModelLoadError(
        f"factory {ref!r} returned example inputs of type {type(example).__name__}",
        "return (module, (tensor, ...)): example_inputs must be a tuple of torch tensors",
    )


def _input_names(module, count: int) -> list[str]:
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names[:count] if len(names) >= count else [f"input_{i}" for i in range(count)]


def _dtype_name(tensor) -> str:
    return str(tensor.dtype).replace("torch.", "")


def _flatten_outputs(out) -> list[tuple[str, Any]]:
    torch = _torch()
    if isinstance(out, torch.Tensor):
        return [("output", out)]
    if isinstance(out, dict):
        return [(str(k), v) for k, v in out.items() if isinstance(v, torch.Tensor)]
    if isinstance(out, (tuple, list)):
        return [(f"output_{i}", v) for i, v in enumerate(out) if isinstance(v, torch.Tensor)]
    raise ModelLoadError(f"the model returned {type(out).__name__}", "return a tensor, a tuple or a dict of tensors")


def torch_specs(module, example: tuple, overrides: Optional[list[TensorSpec]] = None,
                output_names: Optional[list[str]] = None):
    """Input and output specs from the example run; ``overrides`` name dynamic dims."""
    torch = _torch()
    names = _input_names(module, len(example))
    inputs = [TensorSpec(n, tuple(t.shape), _dtype_name(t)) for n, t in zip(names, example)]
    if overrides:
        inputs = apply_overrides(inputs, overrides)
    try:
        with torch.no_grad():
            out = module(*example)
    except Exception as exc:  # the user's model on the user's own example: say which, in one line
        fed = ", ".join(f"{n}: {t.dtype}{list(t.shape)}" for n, t in zip(names, example))
        raise ModelLoadError(f"the model fails on its own example inputs ({fed}): {type(exc).__name__}: "
                             f"{first_line(exc, 200)}",
                             "fix the factory's example inputs (ids within the embedding size, the right shapes)") from None
    flat = _flatten_outputs(out)
    batch_dim = inputs[0].shape[0] if inputs and inputs[0].shape else None
    example_batch = example[0].shape[0] if example and example[0].dim() else None
    outputs = []
    for i, (name, tensor) in enumerate(flat):
        dims: list = list(tensor.shape)
        # An output whose first dim equals the example batch follows a dynamic batch input.
        if isinstance(batch_dim, str) and dims and dims[0] == example_batch:
            dims[0] = batch_dim
        if output_names and i < len(output_names):
            name = output_names[i]
        outputs.append(TensorSpec(name, tuple(dims), _dtype_name(tensor)))
    return inputs, outputs


def apply_overrides(inputs: list[TensorSpec], overrides: list[TensorSpec],
                    rename: bool = True) -> list[TensorSpec]:
    """Replace inputs by ``--input`` specs by name; with ``rename`` (PyTorch sources, whose
    input names are only a convention) a full list of new names replaces them by position."""
    by_name = {s.name: s for s in inputs}
    if all(o.name in by_name for o in overrides):
        for o in overrides:
            if len(o.shape) != len(by_name[o.name].shape):
                raise ModelLoadError(
                    f"--input {o.name} has {len(o.shape)} dims, the model input has "
                    f"{len(by_name[o.name].shape)} ({by_name[o.name].shape_str()})",
                    "give one size or name per dimension",
                )
        return [next((o for o in overrides if o.name == s.name), s) for s in inputs]
    if not rename or len(overrides) != len(inputs):
        known = ", ".join(by_name)
        unknown = [o.name for o in overrides if o.name not in by_name]
        raise ModelLoadError(
            f"--input names {', '.join(unknown)} match no model input",
            f"the model's inputs are: {known}",
        )
    return list(overrides)


def load_factory(ref: str, overrides=None) -> Model:
    torch = _torch()
    func = import_callable(ref)
    try:
        result = func()
    except Exception as exc:
        raise ModelLoadError(f"factory {ref!r} raised {type(exc).__name__}: {exc}") from exc
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise ModelLoadError(
            f"factory {ref!r} returned {type(result).__name__}, not (module, example_inputs)",
            "return a 2-tuple: (torch.nn.Module, (example_tensor, ...))",
        )
    module, example = result
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(
            f"factory {ref!r} returned {type(module).__name__} where a torch.nn.Module was expected",
            "return (module, example_inputs)",
        )
    module.eval()
    example = _as_example_tuple(example, ref)
    inputs, outputs = torch_specs(module, example, overrides)
    name = ref.rpartition(":")[2]
    return Model(name=name, format="pytorch", source=ref, inputs=inputs, outputs=outputs,
                 module=module, example_inputs=example)


def load_pt2(path: Path, source: str, overrides=None) -> Model:
    torch = _torch()
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelLoadError(
            f"{path} is not a loadable torch.export archive ({type(exc).__name__}: {str(exc)[:200]})",
            "save it with torch.export.save(torch.export.export(model, args), path)",
        ) from None
    example = program.example_inputs[0] if program.example_inputs else None
    if not example:
        raise ModelLoadError(f"{path} carries no example inputs", "re-export with torch.export.export(model, args)")
    module = program.module()
    names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    inputs, outputs = torch_specs(module, tuple(example), overrides)
    if len(names) == len(inputs) and not overrides:
        inputs = [TensorSpec(n, s.shape, s.dtype) for n, s in zip(names, inputs)]
    return Model(name=path.stem, format="pt2", source=source, inputs=inputs, outputs=outputs,
                 path=path, module=module, example_inputs=tuple(example), meta={"program": program})


def describe_torch(model: Model) -> dict:
    torch = _torch()
    params = Counter()
    for p in model.module.parameters():
        params[_dtype_name(p)] += p.numel()
    for b in model.module.buffers():
        if b.is_floating_point():
            params[_dtype_name(b)] += b.numel()
    info: dict[str, Any] = {
        "parameters": int(sum(params.values())),
        "parameters_by_dtype": dict(params),
        "opset": None,
        "runtime": f"torch {torch.__version__}",
    }
    program = model.meta.get("program")
    try:
        if program is None:
            program = torch.export.export(model.module, model.example_inputs)
        ops = Counter(
            str(node.target).replace("aten.", "").split(".")[0]
            for node in program.graph.nodes if node.op == "call_function"
        )
        info["ops"] = dict(ops.most_common())
    except Exception as exc:  # torch.export cannot trace every model; inspect still reports the rest
        info["ops"] = {}
        info["ops_error"] = f"torch.export failed: {type(exc).__name__}: {first_line(exc, 200)}"
    return info
