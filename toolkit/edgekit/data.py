"""Calibration and evaluation data: one small protocol for npz files, factories and built-ins,
each read into a :class:`~edgekit.dataset.Dataset` and checked against the model."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np

from .dataset import LABELS, LENGTHS, SEQUENCE, Dataset  # noqa: F401  (imported from here too)
from .errors import DataError
from .spec import Model, TensorSpec


def load_data(ref: str, model: Model, limit: Optional[int] = None) -> Dataset:
    """Load ``ref`` (an .npz, a .parquet file or folder - the collector's export too -, a .csv, a folder of
    pictures or WAV files, a .txt of sentences (edgekit.datafiles), or a factory ``module:function``)
    and check it against ``model``."""
    from .datafiles import load_files
    from .tables import files_table

    path = Path(ref)
    files = files_table(path)  # pictures, WAV files or sentences
    if files is not None:
        dataset = load_files(files, model, limit)
    elif path.suffix in (".npz", ".parquet", ".pq", ".csv") or path.exists():
        dataset = _load_table(path, model)
    elif ":" in ref:
        dataset = _load_factory(ref, limit)
    else:
        raise DataError(f"data {ref!r} is neither a data file nor a factory",
                        "pass data.npz, data.parquet, data.csv, an export folder, a folder of pictures or WAV files, a .txt "
                        "of sentences, or module:function")
    if limit:
        dataset = dataset.head(limit)
    return check_against(dataset, model)


def _load_table(path: Path, model: Model) -> Dataset:
    """A data file or the collector's export: its metadata and outputs are not model inputs, and
    its labels count only where every row has one. A flat table (a CSV, Parquet of scalars) for a
    one-input model may give that input's values as feature columns."""
    from .tables import features_as_input, labels_of, load_columns, model_columns

    columns = load_columns(path)
    data_inputs = [s for s in model.inputs if s.is_data]
    names = {s.name for s in model.inputs}
    columns = {k: v for k, v in columns.items() if k in names or k not in ("key", "id")}  # row ids, not inputs
    if path.suffix.lower() in (".csv", ".parquet", ".pq") and len(data_inputs) == 1:
        columns = features_as_input(columns, data_inputs[0].name, data_inputs[0].sample_shape)
    arrays = model_columns(columns)
    labels = arrays.pop(LABELS, None)
    fixed = {k: arrays.pop(k) for k in [k for k, v in arrays.items() if np.ndim(v) == 0]}
    sequences = arrays.pop(SEQUENCE, None)
    lengths = arrays.pop(LENGTHS, None)
    if "labelled" in columns:  # an export: feedback labels, as text; a partly labelled one is judged without
        labels = labels_of(columns, origin=str(path)) if labels is not None and columns["labelled"].all() else None
    return Dataset(arrays, labels, source=str(path), sequences=sequences, fixed=fixed, lengths=lengths)


def _load_factory(ref: str, limit: Optional[int]) -> Dataset:
    from ._hooks import import_callable

    func = import_callable(ref, what="data factory")
    chunks: dict[str, list] = {}
    try:
        items = func()
        for batch in itertools.islice(items, limit):
            if not isinstance(batch, dict):
                raise DataError(
                    f"data factory {ref!r} yielded {type(batch).__name__}",
                    "yield dicts of numpy arrays keyed by input name (plus optional 'labels')",
                )
            for key, value in batch.items():
                chunks.setdefault(key, []).append(np.asarray(value))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"data factory {ref!r} raised {type(exc).__name__}: {exc}") from exc
    if not chunks:
        raise DataError(f"data factory {ref!r} yielded nothing", "yield at least one dict of arrays")
    arrays = {k: np.concatenate(v) for k, v in chunks.items()}
    labels = arrays.pop(LABELS, None)
    return Dataset(arrays, labels, source=ref)


def _fits(spec: TensorSpec, sample_shape: tuple[int, ...]) -> bool:
    expected = spec.sample_shape
    if len(expected) != len(sample_shape):
        return False
    return all(isinstance(e, str) or e == a for e, a in zip(expected, sample_shape))


def _constants_from(dataset: Dataset, model: Model) -> list[TensorSpec]:
    """Inputs without a batch axis given once in the data (a 0-d ``sr`` in an .npz) become fixed
    values, as ``--input sr:=16000`` would make them."""
    specs = []
    for spec in model.inputs:
        array = dataset.fixed.get(spec.name, dataset.arrays.get(spec.name))
        if spec.is_data and array is not None and spec.batch_axis is None and np.ndim(array) == len(spec.shape):
            value = np.asarray(array).astype(spec.dtype)
            spec = spec.with_(value=tuple(value.reshape(-1).tolist()), shape=tuple(value.shape))
        specs.append(spec)
    return specs


def check_against(dataset: Dataset, model: Model) -> Dataset:
    """Names, shapes and dtypes must match the model; safe casts within a kind are applied."""
    layout = _constants_from(dataset, model)
    wanted = {s.name: s for s in layout if s.is_data}
    fixed = {s.name for s in layout if not s.is_data}
    missing = [n for n in wanted if n not in dataset.arrays]
    extra = [n for n in list(dataset.arrays) + list(dataset.fixed) if n not in wanted and n not in fixed]
    if len(missing) == 1 and len(wanted) == 1 and len(dataset.arrays) == 1 and extra == list(dataset.arrays):
        # One input, one array: fed by position, as converters rename inputs (a TFLite file of the
        # digits model takes serving_default_args_0, and samples.npz has what the model called input)
        (given,) = dataset.arrays
        dataset = replace(dataset, arrays={missing[0]: dataset.arrays[given]},
                          source=f"{dataset.source} (its one array {given} as the model's one input {missing[0]})")
        missing, extra = [], []
    if missing or extra:
        problem = []
        if missing:
            problem.append(f"missing input {', '.join(missing)}")
        if extra:
            problem.append(f"unknown array {', '.join(extra)}")
        raise DataError(
            f"data from {dataset.source} does not match the model: {'; '.join(problem)}",
            f"the model's inputs are {', '.join(wanted)} (plus optional 'labels')"
            + (f"; {', '.join(sorted(fixed))} are fixed or fed back, not data" if fixed else ""),
        )
    if len(dataset) == 0:
        raise DataError(f"data from {dataset.source} holds 0 samples", "give at least one sample per input")
    arrays = {}
    for name, spec in wanted.items():
        array = dataset.arrays[name]
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).reshape(len(array), -1).any(axis=1).sum())
            raise DataError(f"data input {name!r} from {dataset.source} holds NaN or infinite values in {bad} of "
                            f"{len(array)} samples", "clean or drop those samples; accuracy cannot be judged on them")
        if not _fits(spec, array.shape[1:]):
            where = ("the first axis is the sample axis" if spec.batch_axis == 0 else
                     f"the first axis is the sample axis; it goes to {name}'s batch axis {spec.batch_axis}")
            raise DataError(
                f"data input {name!r} has samples of shape {tuple(array.shape[1:])}, the model "
                f"expects {'x'.join(str(d) for d in spec.sample_shape) or 'scalar'} per sample ({where})",
                f"reshape the data to N x {'x'.join(str(d) for d in spec.sample_shape)}",
            )
        arrays[name] = _cast(array, spec, name)
    labels = dataset.labels
    if labels is not None and labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise DataError(f"labels from {dataset.source} are not one finite value per sample",
                        "give integer class labels, one per sample")
    lengths, ragged = _ragged(arrays, layout, model, dataset)
    return Dataset(arrays, labels, dataset.source, dataset.synthetic, layout, dataset.sequences, {}, lengths, ragged)


def _ragged(arrays: dict, layout: list[TensorSpec], model: Model, dataset: Dataset):
    """Padded samples of a model with a dynamic axis: each sample's length and the inputs padded
    along that axis (name -> axis of the sample-first array). Token rows: the lengths are read off
    the attention mask (the declared text processing's, else an integer input named like a mask).
    Anything else (text-line images of different widths): the data file's own ``lengths``, along
    the one dynamic axis its inputs share. A model with fixed sizes is fed its padding as it is."""
    from .dataset import row_lengths

    axis = {s.name: s.shape[1] for s in layout if s.is_data and s.batch_axis == 0 and len(s.shape) >= 2
            and isinstance(s.shape[1], str) and s.name in arrays}
    text = (model.meta.get("processing") or {}).get("text") or {}
    masks = [text["mask"]] if text.get("mask") in axis else [n for n in axis if "mask" in n.lower()]
    if len(masks) == 1 and arrays[masks[0]].dtype.kind in "iub":
        lengths = dataset.lengths if dataset.lengths is not None else row_lengths(arrays[masks[0]])
        return lengths, {n: 1 for n, dim in axis.items() if dim == axis[masks[0]]}
    if dataset.lengths is None:
        return None, {}
    return _checked_lengths(np.asarray(dataset.lengths), arrays, layout, dataset.source)


def _checked_lengths(lengths: np.ndarray, arrays: dict, layout: list[TensorSpec], source: str):
    """A data file's ``lengths`` against the one dynamic, non-batch dim of its inputs."""
    dims = {(s.name, i, d) for s in layout if s.is_data and s.batch_axis == 0 and s.name in arrays
            for i, d in enumerate(s.shape) if i > 0 and isinstance(d, str)}
    names = {d for _, _, d in dims}
    if len(names) != 1:
        raise DataError(f"data from {source} gives 'lengths', but the model's inputs vary along "
                        f"{len(names)} dims ({', '.join(sorted(names)) or 'none'}), not one",
                        "give 'lengths' only for a model with one dynamic axis besides the batch, or pad to one size")
    ragged = {name: axis for name, axis, _ in dims}
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or len(lengths) and lengths.min() < 1:
        raise DataError(f"'lengths' from {source} is not one positive integer per sample",
                        "save each padded sample's own size along the dynamic axis, e.g. a text line's width")
    longest = min(arrays[n].shape[a] for n, a in ragged.items())
    if len(lengths) and lengths.max() > longest:
        raise DataError(f"'lengths' from {source} goes up to {int(lengths.max())}, past the padded size {longest}",
                        "give each sample's size within the padded arrays")
    return lengths.astype(np.int64), ragged


def _sample_first(value: np.ndarray, axis: Optional[int], count: int) -> np.ndarray:
    if axis is None or value.ndim <= axis:
        return np.broadcast_to(value, (count,) + value.shape).copy()
    return np.moveaxis(value, axis, 0)


def run_dataset(session, data: Dataset, model: Model, batch_size: int = 32) -> list[np.ndarray]:
    """Every sample of ``data`` through ``session``; outputs come back sample-first (one row per
    sample). Batch-first models run in chunks; others chunk along each input's own batch axis;
    stateful ones step through each sequence, feeding the state output back."""
    from .models.interface import standard

    layout = data.layout or model.inputs
    if data.lengths is not None and standard(layout):  # each sample at its own length
        return data.grouped(lambda feeds: session.run_batched(feeds, batch_size), batch_size)
    if standard(layout):
        return session.run_batched(data.feeds(0, len(data)), batch_size)
    out_axes = [o.batch_axis for o in model.outputs]
    fixed = any(isinstance(s.shape[s.batch_axis], int) for s in layout if s.is_data and s.batch_axis is not None)
    states = {s.name: s.state_of for s in layout if s.state_of is not None}
    names = [o.name for o in model.outputs]
    if states:
        return _run_sequences(session, data, states, names, out_axes)
    step = 1 if fixed else batch_size
    chunks = []
    for start in range(0, len(data), step):
        count = min(step, len(data) - start)
        got = session.run(data.feeds(start, start + count))
        chunks.append([_sample_first(g, a, count) for g, a in zip(got, out_axes)])
    return [np.concatenate(parts) for parts in zip(*chunks)]


def _run_sequences(session, data: Dataset, states: dict[str, str], names: list[str], out_axes) -> list[np.ndarray]:
    """One step per sample, in order; the state restarts at zero where a new sequence begins."""
    seq = data.sequences if data.sequences is not None else np.zeros(len(data), np.int64)
    rows = []
    carried: dict[str, np.ndarray] = {}
    for i in range(len(data)):
        feeds = data.feeds(i, i + 1)
        if i > 0 and seq[i] == seq[i - 1]:
            feeds.update(carried)
        got = session.run(feeds)
        by_name = dict(zip(names, got))
        carried = {inp: by_name[out].astype(feeds[inp].dtype) for inp, out in states.items()}
        rows.append([_sample_first(g, a, 1) for g, a in zip(got, out_axes)])
    return [np.concatenate(parts) for parts in zip(*rows)]


def _cast(array: np.ndarray, spec: TensorSpec, name: str) -> np.ndarray:
    target = np.dtype(spec.dtype)
    if array.dtype == target:
        return array
    if array.dtype.kind == target.kind or (array.dtype.kind in "iub" and target.kind in "iu"):
        return array.astype(target)
    raise DataError(
        f"data input {name!r} is {array.dtype}, the model expects {target}",
        f"convert it with array.astype('{target}')",
    )


def integer_ranges(model: Model) -> dict[str, tuple[int, int, str]]:
    """{input: (low, high exclusive, why)} for integer inputs: synthetic ids must stay inside what
    the model accepts (an id past an embedding table crashes it). From the example inputs and the
    embedding sizes: nn.Embedding modules for PyTorch, Gather tables fed by the input for ONNX."""
    ranges: dict[str, tuple[int, int, str]] = {}
    tables: dict[str, int] = {}
    if model.is_torch:
        sizes = [m.num_embeddings for m in model.module.modules() if type(m).__name__ in ("Embedding", "EmbeddingBag")]
        if sizes:
            tables = {s.name: min(sizes) for s in model.inputs}
    elif model.meta.get("proto") is not None:
        tables = _onnx_gather_tables(model.meta["proto"])
    examples = dict(zip((s.name for s in model.inputs), model.example_inputs or ()))
    for spec in model.inputs:
        if np.dtype(spec.dtype).kind not in "iu" or "mask" in spec.name:
            continue
        low, high, why = 0, 100, "default"
        example = examples.get(spec.name)
        if example is not None and getattr(example, "numel", lambda: 0)():
            values = example.detach().cpu().numpy() if hasattr(example, "detach") else np.asarray(example)
            # ids count from 0; the example's largest id is known to be accepted
            low, high, why = min(0, int(values.min())), max(int(values.max()) + 1, 2), "the example inputs"
        if spec.name in tables:  # the embedding table is authoritative: every row is a valid id
            low, high, why = 0, tables[spec.name], f"an embedding of {tables[spec.name]} rows"
        ranges[spec.name] = (low, high, why)
    return ranges


def _onnx_gather_tables(proto) -> dict[str, int]:
    """Graph inputs used (directly or through one Cast) as Gather indices into an initializer."""
    inits = {t.name: t.dims[0] for t in proto.graph.initializer if len(t.dims)}
    inputs = {i.name for i in proto.graph.input}
    alias = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "Cast" and n.input[0] in inputs}
    tables: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in inits:
            source = alias.get(node.input[1], node.input[1])
            if source in inputs:
                tables[source] = min(tables.get(source, inits[node.input[0]]), inits[node.input[0]])
    return tables


def synthesize(model: Model, n: int = 32, seed: int = 0) -> Dataset:
    """Inputs made up from the spec, for when no data is given; reports say so (``synthetic``)
    and give the integer ranges used, and why. Dynamic dims other than the batch axis have no
    size to invent: they are refused with the ``--input`` lines that would size them."""
    from .models.interface import suggest_input, unsized

    missing = unsized(model.inputs)
    if missing:
        listed = "; ".join(f"{s.name} ({s.shape_str()}): dim {', '.join(map(str, dims))}" for s, dims in missing)
        raise DataError(f"{model.name} has dynamic dims other than the batch that need a size: {listed}",
                        "give real inputs with --data, or size them: "
                        + " ".join(suggest_input(s) for s, _ in missing))
    rng = np.random.default_rng(seed)
    ranges = integer_ranges(model)
    arrays = {}
    for spec in model.inputs:
        if not spec.is_data:
            continue
        shape = (n,) + tuple(d if isinstance(d, int) else 1 for d in spec.sample_shape)
        dtype = np.dtype(spec.dtype)
        if "mask" in spec.name:
            arrays[spec.name] = np.ones(shape, dtype)
        elif dtype.kind in "iu":
            low, high, _ = ranges[spec.name]
            arrays[spec.name] = rng.integers(low, high, size=shape).astype(dtype)
        elif dtype.kind == "b":
            arrays[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            arrays[spec.name] = rng.standard_normal(shape).astype(dtype)
    notes = "; ".join(f"{name} integers in [{low}, {high}) from {why}" for name, (low, high, why) in ranges.items()
                      if model.input(name).is_data)
    return Dataset(arrays, None, source=f"synthetic inputs ({notes})" if notes else "synthetic inputs", synthetic=True,
                   layout=list(model.inputs))
