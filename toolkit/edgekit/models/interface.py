"""How a model's inputs take samples: the batch axis of each input, fixed values, recurrent state.

Models are not all "batch first". Silero VAD takes ``input`` (batch x samples), ``state``
(2 x batch x 128) and a scalar ``sr``; PaddleOCR's exports name their batch dim
``p2o.DynamicDimension.0``. The batch axis of each input comes, in this order, from
``--batch-axis NAME:K`` (or ``NAME:none``), from a named dim that is the batch (``batch``, ``N``...,
or a name shared as the outer dim of several inputs), from the one dynamic dim of an input whose
outer dim is fixed above one (a state ``2 x ? x 128``), and else axis 0. Scalars have none: they
are fed as they are with every batch. A state input is one whose output comes back under its name
plus a suffix (``state`` -> ``stateN``, ``h0`` -> ``hn``) with the same shape, or one named by
``--state IN=OUT``: sequences are run by feeding it back.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from ..errors import ModelLoadError
from ..spec import Dim, TensorSpec, elements

BATCH_NAMES = {"batch", "batch_size", "batchsize", "n", "b", "bs", "num_samples", "unk__0"}
_DIM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_STATE_SUFFIXES = ("n", "N", "_out", "_n", ".out", "_new", "out")


def name_dims(tensor: str, dims: Sequence[Dim]) -> tuple[Dim, ...]:
    """Unnamed and placeholder dims ('', '?', 'unk') get names unique to their tensor, so that two
    tensors' unknown dims are never taken for the same dim."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", tensor).strip("_") or "t"
    if not base[0].isalpha() and base[0] != "_":
        base = f"t_{base}"
    return tuple(d if isinstance(d, int) or (d and d != "?" and _DIM_NAME.match(d)) else f"{base}_d{i}"
                 for i, d in enumerate(dims))


def parse_batch_axis(text: str) -> tuple[str, Optional[int]]:
    """``--batch-axis NAME:K`` or ``NAME:none``."""
    name, _, axis = text.rpartition(":")
    if not name or not (axis.isdigit() or axis.lower() == "none"):
        raise ModelLoadError(f"bad --batch-axis {text!r}", "write NAME:AXIS (e.g. state:1) or NAME:none")
    return name, None if axis.lower() == "none" else int(axis)


def parse_state(text: str) -> tuple[str, str]:
    """``--state IN=OUT``: the output fed back into the input at the next step."""
    src, _, out = text.partition("=")
    if not src or not out:
        raise ModelLoadError(f"bad --state {text!r}", "write INPUT=OUTPUT, e.g. state=stateN")
    return src.strip(), out.strip()


def parse_batch_axes(items: Sequence) -> dict[str, Optional[int]]:
    """Texts (Python callers) or (name, axis) pairs (the CLI parsed them already)."""
    return dict(parse_batch_axis(i) if isinstance(i, str) else i for i in items)


def parse_states(items: Sequence) -> dict[str, str]:
    return dict(parse_state(i) if isinstance(i, str) else i for i in items)


def _batch_names(inputs: list[TensorSpec]) -> set[str]:
    outer = [s.shape[0] for s in inputs if s.shape and isinstance(s.shape[0], str)]
    names = {d for d in outer if d.lower() in BATCH_NAMES or outer.count(d) > 1}
    for s in inputs:  # a conventional name anywhere (a state's 'batch' at axis 1)
        names |= {d for d in s.shape if isinstance(d, str) and d.lower() in BATCH_NAMES}
    return names


def batch_axis(spec: TensorSpec, names: set[str], several: bool) -> tuple[Optional[int], str]:
    """(axis, why) for one input of the graph, before any --input sizes its dims."""
    if not spec.shape:
        return None, "a scalar: fed as it is with every batch"
    named = [i for i, d in enumerate(spec.shape) if isinstance(d, str) and d in names]
    if named:
        return named[0], f"dim {named[0]} is the batch dim {spec.shape[named[0]]!r}"
    dynamic = [i for i, d in enumerate(spec.shape) if isinstance(d, str)]
    if several and isinstance(spec.shape[0], int) and spec.shape[0] > 1 and len(dynamic) == 1:
        return dynamic[0], f"its only dynamic dim (dim 0 is fixed at {spec.shape[0]})"
    return 0, "the outer dim"


def fit_overrides(graph: list[TensorSpec], overrides: list[TensorSpec], explicit: set[str], origin: str) -> list[TensorSpec]:
    """``--input`` on an exported file may only size its dynamic dims: the graph's fixed dims
    and dtypes are facts, and a bundle built on other ones would not run."""
    by_name = {s.name: s for s in graph}
    result = dict(by_name)
    for o in overrides:
        real = by_name.get(o.name)
        if real is None:
            raise ModelLoadError(f"--input {o.name} matches no input of {origin}",
                                 f"its inputs are: {', '.join(f'{s.name}:{s.shape_str()}:{s.dtype}' for s in graph)}")
        if len(o.shape) != len(real.shape):
            raise ModelLoadError(f"--input {o.name} has {len(o.shape)} dims, {origin} has {len(real.shape)} "
                                 f"({real.shape_str()})", "give one size or name per dimension")
        for axis, (want, got) in enumerate(zip(real.shape, o.shape)):
            if isinstance(want, int) and want != got:
                raise ModelLoadError(f"--input {o.name}: dim {axis} is fixed at {want} in {origin}, not {got}",
                                     f"only dynamic dims can be set; e.g. --input {o.name}:{real.shape_str()}")
        if o.name in explicit and o.dtype != real.dtype:
            raise ModelLoadError(f"--input {o.name}:{o.dtype} but {origin} takes {real.dtype}",
                                 f"drop the dtype, or write :{real.dtype}")
        result[o.name] = real.with_(shape=o.shape)
    return [result[s.name] for s in graph]


def resolve(graph_inputs: list[TensorSpec], graph_outputs: list[TensorSpec], overrides: list[TensorSpec],
            explicit: set[str], origin: str, batch_axes: Optional[dict[str, Optional[int]]] = None,
            states: Optional[dict[str, str]] = None) -> tuple[list[TensorSpec], list[TensorSpec], dict[str, str]]:
    """The inputs and outputs with batch axes, fixed values and states; and why each axis."""
    batch_axes, states = dict(batch_axes or {}), dict(states or {})
    by_name = {s.name: s for s in graph_inputs}
    for name in list(batch_axes) + list(states):
        if name not in by_name:
            raise ModelLoadError(f"{name!r} is not an input of {origin}",
                                 f"its inputs are: {', '.join(by_name)}")
    names = _batch_names(graph_inputs)
    why: dict[str, str] = {}
    axes: dict[str, Optional[int]] = {}
    for spec in graph_inputs:
        if spec.name in batch_axes:
            axis = batch_axes[spec.name]
            if axis is not None and axis >= len(spec.shape):
                raise ModelLoadError(f"--batch-axis {spec.name}:{axis}: {spec.name} has {len(spec.shape)} dims "
                                     f"({spec.shape_str()})", f"give an axis below {len(spec.shape)}, or none")
            axes[spec.name], why[spec.name] = axis, "--batch-axis"
        else:
            axes[spec.name], why[spec.name] = batch_axis(spec, names, len(graph_inputs) > 1)
    sized = fit_overrides(graph_inputs, overrides, explicit, origin) if overrides else list(graph_inputs)
    values = {o.name: o.value for o in overrides if o.value is not None}
    out_names = {o.name for o in graph_outputs}
    for spec in graph_inputs:  # a state's output is its name plus a suffix, with the same shape
        if spec.name in states or spec.name in values or not spec.shape:
            continue
        for suffix in _STATE_SUFFIXES:
            cands = [spec.name + suffix, spec.name.rstrip("0") + suffix]
            hit = next((c for c in cands if c in out_names and c != spec.name), None)
            if hit:
                states[spec.name] = hit
                break
    for name, out in states.items():
        if out not in out_names:
            raise ModelLoadError(f"--state {name}={out}: {origin} has no output {out!r}",
                                 f"its outputs are: {', '.join(out_names)}")
    inputs = []
    for spec in sized:
        axis = axes[spec.name]
        value = values.get(spec.name)
        if value is not None:
            axis = None  # a fixed value is the same for every sample
            why[spec.name] = "a fixed value"
            if len(value) != elements(spec.shape):
                raise ModelLoadError(f"--input {spec.name}:=... gives {len(value)} values, {spec.name} has shape "
                                     f"{spec.shape_str()}", "give one value per element")
            value = tuple(int(v) for v in value) if spec.dtype.startswith(("int", "uint", "bool")) else value
        inputs.append(spec.with_(batch_axis=axis, value=value, state_of=states.get(spec.name)))
    in_axes = {s.name: s.batch_axis for s in inputs}
    outputs = []
    for spec in graph_outputs:
        state_in = next((i for i, o in states.items() if o == spec.name), None)
        if state_in is not None:
            axis = in_axes[state_in]
        else:
            named = [i for i, d in enumerate(spec.shape) if isinstance(d, str) and d in names]
            axis = named[0] if named else (0 if spec.shape else None)
        outputs.append(spec.with_(batch_axis=axis))
    return inputs, outputs, why


def standard(inputs: list[TensorSpec]) -> bool:
    """Every input batch-first, nothing fixed or fed back: the fast path everywhere."""
    return all(s.batch_axis == 0 and s.is_data for s in inputs)


def unsized(inputs: list[TensorSpec]) -> list[tuple[TensorSpec, list[int]]]:
    """Inputs with dynamic dims other than the batch axis: sizes edgekit would have to invent."""
    rows = []
    for s in inputs:
        if not s.is_data:
            continue
        dims = [i for i, d in enumerate(s.shape) if isinstance(d, str) and i != s.batch_axis]
        if dims:
            rows.append((s, dims))
    return rows


def suggest_input(spec: TensorSpec) -> str:
    """The --input line that sizes a spec (batch 1, other dynamic dims as placeholders to fill)."""
    dims = ["1" if i == spec.batch_axis else (str(d) if isinstance(d, int) else "SIZE")
            for i, d in enumerate(spec.shape)]
    return f"--input {spec.name}:{'x'.join(dims)}"


def judged(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> list[int]:
    """Indices of the outputs the accuracy guard compares: a recurrent state fed back is judged
    through the outputs it produces along the sequence, not on its own (its raw values may drift
    in ways that do not matter)."""
    fed_back = {s.state_of for s in inputs if s.state_of}
    return [i for i, o in enumerate(outputs) if o.name not in fed_back] or list(range(len(outputs)))
