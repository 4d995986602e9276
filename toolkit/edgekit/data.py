"""Calibration and evaluation data: one small protocol for npz files, factories and built-ins.

A :class:`Dataset` holds arrays whose first axis is the sample axis (it maps onto the model's
batch dimension) plus optional ``labels``. It is iterable in batches and also offers
``get_next()``, the protocol onnxruntime's calibrators use, so it can feed them directly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from .errors import DataError
from .models.spec import Model, TensorSpec

LABELS = "labels"


@dataclass
class Dataset:
    arrays: dict[str, np.ndarray]
    labels: Optional[np.ndarray] = None
    source: str = ""
    synthetic: bool = False
    _cursor: Iterator = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        scalars = [name for name, a in self.arrays.items() if np.ndim(a) == 0]
        if scalars:
            raise DataError(f"data array {scalars[0]!r} is a scalar (0-d); the first axis must be the sample axis",
                            "save one row per sample, e.g. shape N x 1 x 8 x 8")
        if self.labels is not None and np.ndim(self.labels) == 0:
            raise DataError("labels are a scalar (0-d)", "give one label per sample")
        sizes = {name: len(a) for name, a in self.arrays.items()}
        if len(set(sizes.values())) > 1:
            raise DataError(
                f"data arrays have different sample counts: {sizes}",
                "every input array needs the same first dimension (the sample axis)",
            )
        if self.labels is not None and len(self.labels) != len(self):
            raise DataError(
                f"{len(self.labels)} labels for {len(self)} samples", "give one label per sample"
            )

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def batches(self, batch_size: int = 1) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self), batch_size):
            yield {k: v[start:start + batch_size] for k, v in self.arrays.items()}

    def __iter__(self):
        return self.batches(1)

    def head(self, n: int) -> "Dataset":
        labels = None if self.labels is None else self.labels[:n]
        return Dataset({k: v[:n] for k, v in self.arrays.items()}, labels, self.source, self.synthetic)

    # onnxruntime.quantization.CalibrationDataReader protocol
    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        if self._cursor is None:
            self._cursor = self.batches(1)
        return next(self._cursor, None)

    def rewind(self) -> None:
        self._cursor = None

    def describe(self) -> str:
        kind = self.source or "synthetic inputs"
        labelled = ", labelled" if self.labels is not None else ""
        return f"{len(self)} samples from {kind}{labelled}"


def load_data(ref: str, model: Model, limit: Optional[int] = None) -> Dataset:
    """Load ``ref`` (an .npz, a .parquet file or folder - the collector's export too - or a factory
    ``module:function``) and check it against ``model``."""
    path = Path(ref)
    if path.suffix in (".npz", ".parquet", ".pq") or path.exists():
        dataset = _load_table(path)
    elif ":" in ref:
        dataset = _load_factory(ref, limit)
    else:
        raise DataError(f"data {ref!r} is neither a data file nor a factory",
                        "pass data.npz, data.parquet, an export folder or module:function")
    if limit:
        dataset = dataset.head(limit)
    return check_against(dataset, model)


def _load_table(path: Path) -> Dataset:
    """A data file or the collector's export: its metadata and outputs are not model inputs, and
    its labels count only where every row has one."""
    from .tables import labels_of, load_columns, model_columns

    columns = load_columns(path)
    arrays = model_columns(columns)
    labels = arrays.pop(LABELS, None)
    if "labelled" in columns:  # an export: feedback labels, as text; a partly labelled one is judged without
        labels = labels_of(columns, origin=str(path)) if labels is not None and columns["labelled"].all() else None
    return Dataset(arrays, labels, source=str(path))


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
    expected = spec.shape[1:]
    if len(expected) != len(sample_shape):
        return False
    return all(isinstance(e, str) or e == a for e, a in zip(expected, sample_shape))


def check_against(dataset: Dataset, model: Model) -> Dataset:
    """Names, shapes and dtypes must match the model; safe casts within a kind are applied."""
    wanted = {s.name: s for s in model.inputs}
    missing = [n for n in wanted if n not in dataset.arrays]
    extra = [n for n in dataset.arrays if n not in wanted]
    if missing or extra:
        problem = []
        if missing:
            problem.append(f"missing input {', '.join(missing)}")
        if extra:
            problem.append(f"unknown array {', '.join(extra)}")
        raise DataError(
            f"data from {dataset.source} does not match the model: {'; '.join(problem)}",
            f"the model's inputs are {', '.join(wanted)} (plus optional 'labels')",
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
            raise DataError(
                f"data input {name!r} has samples of shape {tuple(array.shape[1:])}, the model "
                f"expects {spec.shape_str()} (the first axis is the sample axis)",
                f"reshape the data to N x {'x'.join(str(d) for d in spec.shape[1:])}",
            )
        arrays[name] = _cast(array, spec, name)
    labels = dataset.labels
    if labels is not None and labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise DataError(f"labels from {dataset.source} are not one finite value per sample",
                        "give integer class labels, one per sample")
    return Dataset(arrays, labels, dataset.source, dataset.synthetic)


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
    and give the integer ranges used, and why."""
    rng = np.random.default_rng(seed)
    ranges = integer_ranges(model)
    arrays = {}
    for spec in model.inputs:
        shape = (n,) + spec.concrete_shape()[1:]
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
    notes = "; ".join(f"{name} integers in [{low}, {high}) from {why}" for name, (low, high, why) in ranges.items())
    return Dataset(arrays, None, source=f"synthetic inputs ({notes})" if notes else "synthetic inputs", synthetic=True)
