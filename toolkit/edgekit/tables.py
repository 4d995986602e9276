"""Data as tables of named columns (first axis = rows): .npz (a data set, or the collector's
export), a Parquet file, a folder of Parquet files (the collector's partitioned export, read
as one data set), a CSV (one value per cell: feature columns, labels, keys), a folder of pictures
or WAV files (a ``path`` per file, and its ``class`` where files sit in a folder per class), or a
.txt of sentences (a ``text`` per line). Parquet, CSV and text are streamed in chunks; an .npz
array is read per key.

Column names are what every command expects: model inputs by name (``input``, ``input_ids``),
``labels``, and the export's ``outputs/<name>``, ``request_id``, ``device``, ``time``... Exports
from before inputs were written under their own names (``inputs/<name>``, ``label``) read the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ._io import open_parquet
from .errors import DataError

# What the collector's export (and the retraining loop's data sets: ``source``) add next to the
# model's inputs and labels: never a model input.
EXPORT_META = ("request_id", "row", "device", "group", "time", "model", "version", "outcome", "labelled", "date",
               "source")
OUTPUT_PREFIX = "outputs/"
IMAGES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
AUDIO = {".wav"}


def canonical(name: str) -> str:
    if name.startswith("inputs/"):
        return name[len("inputs/"):]
    return "labels" if name == "label" else name


def model_columns(columns: dict) -> dict:
    """The columns that can be model inputs (and labels): the export's metadata and outputs left out."""
    return {k: v for k, v in columns.items() if k not in EXPORT_META and not k.startswith(OUTPUT_PREFIX)}


@dataclass
class Table:
    path: Path
    rows: Optional[int]
    columns: list[str]
    chunk: int

    def __post_init__(self):
        self.columns = [canonical(c) for c in self.columns]

    def chunks(self) -> Iterator[dict[str, np.ndarray]]:
        for chunk in self._chunks():
            yield {canonical(k): v for k, v in chunk.items()}

    def _chunks(self) -> Iterator[dict[str, np.ndarray]]:
        raise NotImplementedError


class NpzTable(Table):
    def _chunks(self):
        with np.load(self.path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        for start in range(0, self.rows or 0, self.chunk):
            yield {name: a[start:start + self.chunk] for name, a in arrays.items()}


class ParquetTable(Table):
    def _chunks(self):
        for batch in open_parquet(self.path).iter_batches(batch_size=self.chunk):
            yield _batch_columns(batch)


class ParquetDataset(Table):
    """A folder of Parquet files with hive partitions (model=digits/date=2026-11-28/part-0.parquet):
    the partition keys become columns."""

    def _chunks(self):
        for batch in _dataset(self.path).to_batches(batch_size=self.chunk, batch_readahead=1, fragment_readahead=1):
            if batch.num_rows:
                yield _batch_columns(batch)


class CsvTable(Table):
    """A CSV read in blocks by pyarrow (types inferred per column, as pandas would)."""

    def _chunks(self):
        for batch in csv_batches(self.path):
            for start in range(0, batch.num_rows, self.chunk):
                yield _batch_columns(batch.slice(start, self.chunk))


@dataclass
class FilesTable(Table):
    """Pictures or WAV files in a folder, one row per file in sorted order: its ``path``, and its
    ``class`` (the folder's name) where every file sits in a folder per class (ImageFolder)."""

    files: tuple = ()
    kind: str = "images"

    def _chunks(self):
        labelled = "class" in self.columns
        for start in range(0, len(self.files), self.chunk):
            part = self.files[start:start + self.chunk]
            chunk = {"path": np.array([str(f) for f in part])}
            if labelled:
                chunk["class"] = np.array([f.parent.name for f in part])
            yield chunk


class TextTable(Table):
    """A .txt of sentences, one per line (blank lines skipped): a ``text`` per row, streamed."""

    kind = "text"

    def _chunks(self):
        batch = []
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    batch.append(line.strip())
                if len(batch) == self.chunk:
                    yield {"text": np.array(batch)}
                    batch = []
        if batch:
            yield {"text": np.array(batch)}


def files_table(path: Path, chunk: int = 65536) -> Optional[FilesTable | TextTable]:
    """A folder of pictures (or else WAV files) or a .txt as a table, else None; the folder is
    walked once."""
    if path.is_file() and path.suffix.lower() == ".txt":
        try:
            with open(path, encoding="utf-8") as fh:
                rows = sum(1 for line in fh if line.strip())
        except UnicodeDecodeError:
            raise DataError(f"{path} is not UTF-8 text", "save it as UTF-8, one sentence per line") from None
        if not rows:
            raise DataError(f"{path} holds no sentences", "one sentence per line")
        return TextTable(path, rows, ["text"], chunk)
    if not path.is_dir():
        return None
    listing = sorted(p for p in path.rglob("*") if p.is_file())
    for kind, suffixes in (("images", IMAGES), ("audio", AUDIO)):
        files = tuple(p for p in listing if p.suffix.lower() in suffixes)
        if files:
            per_class = all(len(f.parent.relative_to(path).parts) == 1 for f in files)
            return FilesTable(path, len(files), ["path"] + (["class"] if per_class else []), chunk, files, kind)
    return None


def open_csv(path: Path):
    """pyarrow's streaming CSV reader, or one line naming what is wrong with the file."""
    try:
        import pyarrow.csv as pacsv
    except ImportError:
        raise DataError("CSV needs pyarrow", "pip install 'edgekit[serve]'") from None
    try:
        return pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 22))
    except Exception as exc:  # pyarrow raises its own error types for broken files
        raise _unreadable(path, exc) from None


def csv_batches(path: Path, reader=None):
    """The CSV's record batches (from ``reader`` when one is open already: its schema was read)."""
    reader = reader or open_csv(path)
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return
        except Exception as exc:  # a row further down that does not parse
            raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: Exception) -> DataError:
    return DataError(f"{path} is not a readable CSV file ({str(exc).splitlines()[0][:200]})")


def csv_rows(path: Path) -> int:
    """Rows in a CSV (lines after the header), counted in 1 MiB blocks without parsing."""
    lines = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            lines += block.count(b"\n")
    return max(0, lines - 1)


def _batch_columns(batch) -> dict[str, np.ndarray]:
    return {name: arrow_to_numpy(batch.column(i)) for i, name in enumerate(batch.schema.names)}


def _dataset(path: Path):
    try:
        import pyarrow.dataset as ds
    except ImportError:
        raise DataError("Parquet needs pyarrow", "pip install 'edgekit[serve]'") from None
    try:
        return ds.dataset(str(path), format="parquet", partitioning="hive")
    except Exception as exc:  # pyarrow's own errors: unreadable files, schemas that do not unify
        raise DataError(f"{path} is not a readable Parquet data set ({str(exc).splitlines()[0][:200]})",
                        "point at one model's folder (model=NAME), whose files share a schema") from None


def arrow_to_numpy(column) -> np.ndarray:
    """A pyarrow column as numpy: list columns stacked to N x shape, scalars as 1-d, strings as objects.

    A null list row becomes a row of NaN so that no_missing can count it instead of the read failing."""
    import pyarrow.compute as pc
    import pyarrow.types as t

    def is_list(kind) -> bool:
        return t.is_list(kind) or t.is_large_list(kind) or t.is_fixed_size_list(kind)

    if is_list(column.type):
        valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
        flat, sizes = column.drop_null(), []
        while is_list(flat.type):
            lengths = pc.list_value_length(flat).to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths != lengths[0]).any():
                raise DataError(f"list column of varying lengths ({lengths.min()}-{lengths.max()}) cannot be a tensor",
                                "pad or crop every row to one shape")
            sizes.append(int(lengths[0]) if len(lengths) else 0)
            flat = pc.list_flatten(flat)
        present = flat.to_numpy(zero_copy_only=False).reshape([int(valid.sum())] + sizes)
        if valid.all():
            return present
        out = np.full([len(column)] + sizes, np.nan, dtype=np.result_type(present.dtype, np.float32))
        out[valid] = present
        return out
    if t.is_string(column.type) or t.is_large_string(column.type) or t.is_binary(column.type):
        return np.asarray(column.to_pylist(), dtype=object)
    return column.to_numpy(zero_copy_only=False)


def open_table(path: str | Path, chunk: int = 65536) -> Table:
    path = Path(path)
    files = files_table(path, chunk)
    if files is not None:
        return files
    if path.is_dir():
        dataset = _dataset(path)
        if not any(True for _ in dataset.get_fragments()):
            raise DataError(f"{path} holds no Parquet files", "point at an 'edgekit collector export --format parquet' folder")
        return ParquetDataset(path, dataset.count_rows(), list(dataset.schema.names), chunk)
    if not path.is_file():
        raise DataError(f"data {path} does not exist", "check the path")
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                columns = list(npz.files)
                sizes = {n: len(npz[n]) if npz[n].ndim else None for n in columns}
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path} is not a readable .npz file ({exc})", "save it with numpy.savez") from None
        scalars = [n for n, s in sizes.items() if s is None]
        if scalars:
            raise DataError(f"{path}: array {scalars[0]!r} is a scalar (0-d)", "one row per sample along the first axis")
        if len(set(sizes.values())) > 1:
            raise DataError(f"{path}: arrays have different row counts {sizes}", "every array needs one row per sample")
        return NpzTable(path, next(iter(sizes.values()), 0), columns, chunk)
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            meta = open_parquet(path)
        except ImportError:
            raise DataError("Parquet needs pyarrow", "pip install 'edgekit[serve]'") from None
        except Exception as exc:  # pyarrow's own errors for broken files
            raise DataError(f"{path} is not a readable Parquet file ({str(exc)[:200]})") from None
        return ParquetTable(path, meta.metadata.num_rows, list(meta.schema_arrow.names), chunk)
    if path.suffix.lower() == ".csv":
        return CsvTable(path, csv_rows(path), list(open_csv(path).schema.names), chunk)
    raise DataError(f"cannot read {path.name}", "give an .npz, a .parquet file or a folder of them "
                    "(a data set or 'edgekit collector export'), a .csv, a folder of pictures or WAV files, "
                    "or a .txt of sentences")


def features_as_input(columns: dict[str, np.ndarray], name: str, sample_shape: tuple) -> dict[str, np.ndarray]:
    """A table of one value per cell (a CSV) for a model with one input that no column names: its
    numeric columns, in order, are the input's values (labels, keys and export columns aside)."""
    if name in columns:
        return columns
    skip = set(EXPORT_META) | {"labels", "label", "key", "id", "sequence"}
    features = [k for k, v in columns.items() if k not in skip and not k.startswith(OUTPUT_PREFIX)
                and v.ndim == 1 and v.dtype.kind in "iuf"]
    if not features:
        return columns
    values = np.stack([columns[k] for k in features], axis=1)
    size = int(np.prod([d for d in sample_shape if isinstance(d, int)])) if sample_shape else 1
    if any(not isinstance(d, int) for d in sample_shape) or values.shape[1] != size:
        raise DataError(f"{len(features)} numeric columns ({features[0]}...{features[-1]}) do not fill input "
                        f"{name!r} of {'x'.join(map(str, sample_shape))} values per sample",
                        f"give {size} feature columns, or one column named {name!r}")
    rest = {k: v for k, v in columns.items() if k not in features}
    return {**rest, name: values.reshape((len(values),) + tuple(sample_shape))}


def load_columns(path: str | Path) -> dict[str, np.ndarray]:
    """The whole table as columns (for tests over a data set that fits in memory: a hard-case
    suite, an evaluation split; expectations stream instead)."""
    table = open_table(path)
    if isinstance(table, NpzTable):  # already whole arrays, empty ones included
        with np.load(table.path, allow_pickle=False) as npz:
            return {canonical(k): npz[k] for k in npz.files}
    parts: dict[str, list] = {}
    for chunk in table.chunks():
        for name, values in chunk.items():
            parts.setdefault(name, []).append(values)
    if not parts:
        raise DataError(f"{path} holds 0 rows", "give at least one row")
    return {k: np.concatenate(v) for k, v in parts.items()}


def take_rows(path: str | Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Some rows of a table (in the order of ``rows``), read in one streaming pass: the rest of
    the table never has to fit in memory. Empty when none of them exist."""
    wanted = np.sort(rows)
    parts: dict[str, list] = {}
    index: list[np.ndarray] = []
    offset = 0
    for chunk in open_table(path).chunks():
        n = len(next(iter(chunk.values())))
        inside = wanted[(wanted >= offset) & (wanted < offset + n)]
        if len(inside):
            for name, values in chunk.items():
                parts.setdefault(name, []).append(values[inside - offset])
            index.append(inside)
        offset += n
    if not index:
        return {}
    position = np.searchsorted(np.concatenate(index), rows)
    return {name: np.concatenate(v)[position] for name, v in parts.items()}


def known_labels(columns: dict[str, np.ndarray], origin: str = "the data") -> tuple[np.ndarray, np.ndarray]:
    """(class labels, which rows have one): an export marks rows without feedback in ``labelled``
    (their label is -1 or ''); every row of other data is labelled."""
    column = next((c for c in ("labels", "label") if c in columns), None)
    if column is None:
        raise DataError(f"{origin} has no labels", "add a 'labels' array")
    values = columns[column]
    mask = columns["labelled"].astype(bool) if "labelled" in columns else np.ones(len(values), bool)
    out = np.full(len(values), -1, dtype=np.int64)
    try:
        out[mask] = values[mask].astype(np.int64)
    except ValueError:
        raise DataError(f"labels in {origin} are not class numbers (e.g. {values[mask][:3].tolist()})") from None
    return out, mask


def labels_of(columns: dict[str, np.ndarray], name: Optional[str] = None, origin: str = "the data") -> np.ndarray:
    """Integer class labels from ``labels`` (or ``label``, or ``name``), strings accepted."""
    column = name or next((c for c in ("labels", "label") if c in columns), None)
    if column is None or column not in columns:
        raise DataError(f"{origin} has no labels", "add a 'labels' array, or name it with --labels")
    labels, mask = known_labels({"labels": columns[column], **({"labelled": columns["labelled"]}
                                                               if "labelled" in columns else {})}, origin)
    if not mask.all():
        raise DataError(f"{int((~mask).sum())} of {len(mask)} rows in {origin} have no label (no feedback yet)",
                        "export with --labelled-only, or label them first")
    return labels
