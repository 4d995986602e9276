"""Tables for the model tests: .npz (a data set, or the collector's export) and Parquet, read as
chunks of named columns (first axis = rows). Parquet is streamed; an .npz array is read per key.

Columns keep their names: model inputs (``input``, ``input_ids``), ``labels``/``label``, and
the export's ``inputs/<name>``, ``outputs/<name>``, ``request_id``, ``device``, ``time``...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from .._io import open_parquet
from ..errors import DataError


@dataclass
class Table:
    path: Path
    rows: Optional[int]
    columns: list[str]
    chunk: int

    def chunks(self) -> Iterator[dict[str, np.ndarray]]:
        raise NotImplementedError


class NpzTable(Table):
    def chunks(self):
        with np.load(self.path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in self.columns}
        for start in range(0, self.rows or 0, self.chunk):
            yield {name: a[start:start + self.chunk] for name, a in arrays.items()}


class ParquetTable(Table):
    def chunks(self):
        for batch in open_parquet(self.path).iter_batches(batch_size=self.chunk):
            yield {name: arrow_to_numpy(batch.column(name)) for name in batch.schema.names}


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
    if not path.is_file():
        raise DataError(f"data {path} does not exist or is not a file", "check the path")
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                columns = list(npz.files)
                sizes = {n: len(npz[n]) if npz[n].ndim else None for n in columns}
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path} is not a readable .npz file ({exc})") from None
        scalars = [n for n, s in sizes.items() if s is None]
        if scalars:
            raise DataError(f"{path}: array {scalars[0]!r} is a scalar", "one row per sample along the first axis")
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
    raise DataError(f"cannot read {path.name}", "give an .npz (a data set or 'edgekit collector export') or Parquet")


def load_columns(path: str | Path) -> dict[str, np.ndarray]:
    """The whole table as columns (for tests over a data set that fits in memory: a hard-case
    suite, an evaluation split; expectations stream instead)."""
    parts: dict[str, list] = {}
    for chunk in open_table(path).chunks():
        for name, values in chunk.items():
            parts.setdefault(name, []).append(values)
    return {k: np.concatenate(v) for k, v in parts.items()}


def labels_of(columns: dict[str, np.ndarray], name: Optional[str] = None, origin: str = "the data") -> np.ndarray:
    """Integer class labels from ``labels`` (or ``label``, or ``name``), strings accepted."""
    column = name or next((c for c in ("labels", "label") if c in columns), None)
    if column is None or column not in columns:
        raise DataError(f"{origin} has no labels", "add a 'labels' array, or name it with --labels")
    values = columns[column]
    try:
        return values.astype(np.int64)
    except ValueError:
        raise DataError(f"labels in {origin} are not class numbers (e.g. {values[:3].tolist()})") from None
