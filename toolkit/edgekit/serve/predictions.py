"""Model-in-DB: score a whole data set into a predictions table, and answer known keys from it.

``edgekit predict`` reads the input in chunks (.npz, Parquet or CSV; never the whole file for the
latter two), runs the bundle in batches, and writes one row per key with the model name and
version, the label and score where the bundle declares classes, and the outputs. Each chunk is
one transaction, and keys already in the table are skipped, so an interrupted run resumes where
it stopped without duplicates. ``edgekit serve --lookup-db`` answers requests that carry a known
key from the same table and runs the model for the rest.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from .._io import open_parquet
from .._sql import SqlDatabase
from ..errors import DataError, EdgekitError
from ..tables import FilesTable, TextTable, csv_batches, csv_rows, files_table, open_csv
from ..runtime import load

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _table_sql(table: str) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {table} (key TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL, "
            "label TEXT, score DOUBLE PRECISION, result TEXT NOT NULL, outputs TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, "
            "PRIMARY KEY (key, model, version))")


# Words SQLite or PostgreSQL reserve, and the prefixes of their own catalog tables: a table of that
# name fails with a syntax error, or names the database's catalog.
_RESERVED = frozenset("""all alter analyze and as asc between by case cast check collate column constraint create
cross current_date current_time current_timestamp current_user default deferrable delete desc distinct do drop else
end except exists false fetch for foreign from full grant group having in index inner insert intersect into is join
key leading left like limit natural not null offset on or order outer primary references returning right select
session_user set some table then to trailing true union unique update user using values when where window with""".split())


def checked_table(table: str) -> str:
    if not _TABLE.match(table):
        raise EdgekitError(f"table name {table!r} is not a plain SQL identifier", "use letters, digits and _")
    if table.lower() in _RESERVED or table.lower().startswith(("sqlite_", "pg_")):
        raise EdgekitError(f"table name {table!r} is reserved by SQL or the database", "e.g. --table predictions")
    return table


@dataclass
class Chunk:
    keys: list[str]
    tensors: Optional[dict[str, np.ndarray]] = None  # model inputs, first axis = rows
    raw: Optional[list] = None  # sentences or pictures for the bundle's own processing


# -- reading the input ---------------------------------------------------------------------------

def read_chunks(path: Path, model, key_column: str, chunk: int) -> tuple[Optional[int], Iterator[Chunk]]:
    """(total rows if known, chunks)."""
    files = files_table(path, chunk)
    if files is not None:
        return _files(files, model)
    if not path.is_file():
        raise DataError(f"input {path} does not exist or is not a file", "check the path")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _npz(path, model, key_column, chunk)
    if suffix in (".parquet", ".pq", ".csv"):
        return _arrow(path, model, key_column, chunk, suffix)
    raise DataError(f"cannot read {path.name}", "give an .npz, a Parquet file, a CSV, a folder of pictures or a "
                    ".txt of sentences")


def _files(table: FilesTable | TextTable, model) -> tuple[int, Iterator[Chunk]]:
    """A folder of pictures (keyed by their path inside it) or a .txt of sentences (row-N), for a
    bundle whose own processing takes pictures or text."""
    path, kind = table.path, table.kind
    wanted = {"images": "image", "text": "text"}.get(kind)
    have = model.preprocess.kind if model.preprocess else ""
    if wanted != have:
        what = {"images": "pictures", "audio": "WAV files", "text": "sentences"}[kind]
        raise DataError(f"{path} holds {what}, but the bundle's processing takes "
                        f"{have + ' input' if have else 'tensors only'}",
                        "give a table with a column per input, or package the model with its processing")

    def chunks():
        seen = 0
        for columns in table.chunks():
            if kind == "images":
                paths = [str(p) for p in columns["path"]]
                yield Chunk([str(Path(p).relative_to(path)) for p in paths], raw=paths)
            else:
                texts = [str(t) for t in columns["text"]]
                yield Chunk([f"row-{i}" for i in range(seen, seen + len(texts))], raw=texts)
                seen += len(texts)
    return table.rows, chunks()


def _npz(path, model, key_column, chunk):
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc})") from None
    names = [s["name"] for s in model.inputs]
    missing = [n for n in names if n not in npz.files]
    if missing:
        raise DataError(f"{path} lacks input {', '.join(missing)}", f"the model takes {', '.join(names)}")
    for name in names:
        try:
            shape = npz[name].shape
        except ValueError:  # object arrays need pickle, which is never loaded
            raise DataError(f"{path}: input {name!r} holds Python objects, not numbers",
                            "save one numeric array per input, rows first") from None
        if not shape:
            raise DataError(f"{path}: input {name!r} is a single value, not an array of rows",
                            "save one numeric array per input, rows first")
    total = len(npz[names[0]])
    keys = None
    if key_column in npz.files:
        column = npz[key_column]
        if column.ndim != 1 or len(column) != total:
            raise DataError(f"{path}: {key_column!r} holds {column.size} keys for {total} rows",
                            f"give one key per row (or no {key_column!r}: rows are keyed row-N)")
        keys = [str(k) for k in column]
        _check_keys(keys, str(path), key_column)

    def chunks():
        with npz:
            for start in range(0, total, chunk):
                stop = min(start + chunk, total)
                yield Chunk(keys[start:stop] if keys else [f"row-{i}" for i in range(start, stop)],
                            tensors={n: np.asarray(npz[n][start:stop]) for n in names})
    return total, chunks()


def _arrow(path, model, key_column, chunk, suffix):
    try:
        import pyarrow as pa  # noqa: F401
    except ImportError:
        raise EdgekitError("Parquet and CSV input needs pyarrow", "pip install 'edgekit[serve]'") from None
    if suffix == ".csv":
        import pyarrow.csv as pacsv

        total, reader = csv_rows(path), open_csv(path)
        if key_column in reader.schema.names:
            keys = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                include_columns=[key_column], column_types={key_column: pa.string()},
                strings_can_be_null=True)).column(key_column)
            _check_keys(keys.to_pylist(), str(path), key_column)
        batches = csv_batches(path, reader)
    else:
        try:
            file = open_parquet(path)
        except Exception as exc:
            raise DataError(f"{path} is not a readable Parquet file ({str(exc)[:200]})") from None
        if key_column in file.schema_arrow.names:
            _check_keys(file.read(columns=[key_column]).column(key_column).to_pylist(), str(path), key_column)
        total, batches = file.metadata.num_rows, file.iter_batches(batch_size=chunk)
    return total, _rows_from_batches(batches, model, key_column, chunk)


def _check_keys(keys: list, origin: str, key_column: str) -> None:
    """One key per row, present and unique: a table keyed by them would otherwise merge rows or
    drop them without a word. Read before anything is scored (the key column alone)."""
    missing = [i for i, k in enumerate(keys) if k is None or str(k).strip() == ""]
    if missing:
        raise DataError(f"{origin}: {len(missing)} rows have no {key_column!r} (first: row {missing[0]})",
                        f"give every row a key, or drop the {key_column!r} column to key rows row-N")
    seen, repeated = set(), []
    for key in map(str, keys):
        if key in seen:
            repeated.append(key)
        seen.add(key)
    if repeated:
        shown = ", ".join(repr(k) for k in list(dict.fromkeys(repeated))[:3])
        raise DataError(f"{origin}: {len(repeated)} rows repeat a {key_column!r} ({shown}); each row needs its own",
                        "make the keys unique, or drop the column to key rows row-N")


def _rows_from_batches(batches, model, key_column, chunk) -> Iterator[Chunk]:
    seen = 0
    names = [s["name"] for s in model.inputs]
    kind = model.preprocess.kind if model.preprocess else ""
    for batch in batches:
        for start in range(0, batch.num_rows, chunk):
            part = batch.slice(start, chunk)
            columns = {name: part.column(name) for name in part.schema.names}
            keys = ([str(k) for k in columns[key_column].to_pylist()] if key_column in columns
                    else [f"row-{i}" for i in range(seen, seen + part.num_rows)])
            seen += part.num_rows
            yield _chunk_of(columns, keys, names, kind, model, key_column)


def _chunk_of(columns: dict, keys: list[str], names: list[str], kind: str, model, key_column: str = "key") -> Chunk:
    if all(n in columns for n in names):  # one (list-valued or scalar) column per input
        tensors = {}
        for spec in model.inputs:
            values = columns[spec["name"]].to_pylist()
            shape = [len(values)] + [d if isinstance(d, int) else -1 for d in spec["shape"][1:]]
            tensors[spec["name"]] = np.asarray(values, dtype=spec["dtype"]).reshape(shape)
        return Chunk(keys, tensors=tensors)
    if kind == "text" and "text" in columns:
        return Chunk(keys, raw=[str(v) for v in columns["text"].to_pylist()])
    if kind == "image" and ("image" in columns or "path" in columns):
        return Chunk(keys, raw=columns["image" if "image" in columns else "path"].to_pylist())
    numeric = [n for n, c in columns.items() if n != key_column and _numeric(c)]  # the key is never a feature
    if len(names) == 1 and numeric:  # feature columns in order make the one input's values
        spec = model.inputs[0]
        values = np.stack([np.asarray(columns[n].to_pylist(), dtype=np.float64) for n in numeric], axis=1)
        shape = [len(keys)] + [d if isinstance(d, int) else -1 for d in spec["shape"][1:]]
        try:
            return Chunk(keys, tensors={spec["name"]: values.astype(spec["dtype"]).reshape(shape)})
        except ValueError:
            raise DataError(f"{len(numeric)} numeric columns do not fill input {spec['name']} of shape "
                            f"{'x'.join(map(str, spec['shape']))}") from None
    hint = "a column per input" + (", or a 'text' column" if kind == "text" else
                                   ", or an 'image' (bytes) or 'path' column" if kind == "image" else "")
    raise DataError(f"the input's columns ({', '.join(columns)}) do not match the model's inputs "
                    f"({', '.join(names)})", f"give {hint}")


def _numeric(column) -> bool:
    import pyarrow.types as t

    return t.is_integer(column.type) or t.is_floating(column.type)


# -- writing predictions ------------------------------------------------------------------------

def predict_to_db(bundle: str | Path, source: Path, db_url: str, table: str = "predictions",
                  key_column: str = "key", batch_size: int = 64, chunk: int = 1024,
                  progress: Callable[[int, Optional[int]], None] = lambda done, total: None,
                  threads: Optional[int] = None) -> dict:
    """Score ``source`` into ``table``; returns counts. Resumable: existing keys are skipped."""

    table = checked_table(table)
    if batch_size < 1 or chunk < 1:
        raise EdgekitError("--batch-size and --chunk must be at least 1")
    model = load(bundle, threads=threads)
    db = SqlDatabase(db_url)
    with db.connect() as tx:
        tx.execute(_table_sql(table))
    name, version = model.name, model.version or "1"
    total, chunks = read_chunks(Path(source), model, key_column, chunk)
    written = skipped = done = 0
    start = time.perf_counter()
    for part in chunks:
        with db.connect() as tx:
            known = set()
            for i in range(0, len(part.keys), 500):
                keys = part.keys[i:i + 500]
                known |= {r[0] for r in tx.all(f"SELECT key FROM {table} WHERE model = ? AND version = ? AND key IN "
                                               f"({','.join('?' * len(keys))})", (name, version, *keys))}
        todo = [i for i, k in enumerate(part.keys) if k not in known]
        skipped += len(part.keys) - len(todo)
        rows = []
        for i in range(0, len(todo), batch_size):
            index = todo[i:i + batch_size]
            try:
                rows += _score(model, part, index, name, version)
            except EdgekitError as exc:  # a bad row (NaN, an undecodable picture): say where, and what is kept
                raise DataError(f"{str(exc).splitlines()[0]} (in the rows keyed {part.keys[index[0]]!r} to "
                                f"{part.keys[index[-1]]!r}); {written} rows were written to {table} before it",
                                "fix those rows and run the same command again: written keys are skipped") from None
        written += write_rows(db, table, rows)
        done += len(part.keys)
        progress(done, total)
    model.close()
    return {"model": name, "version": version, "table": table, "rows": done, "written": written,
            "skipped_existing": skipped, "seconds": round(time.perf_counter() - start, 2)}


def write_rows(db: SqlDatabase, table: str, rows: list[tuple]) -> int:
    """Scored rows into ``table`` in one transaction (an interruption loses at most this chunk);
    keys already there are skipped. Returns the rows written."""
    with db.connect() as tx:
        return tx.executemany(f"INSERT INTO {table} (key, model, version, label, score, result, outputs, created) "
                              "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", rows)


def _score(model, part: Chunk, index: list[int], name: str, version: str) -> list[tuple]:
    if part.tensors is not None:
        outputs = model.predict({k: v[index] for k, v in part.tensors.items()})
    else:
        outputs = model.predict(model.preprocess([part.raw[i] for i in index]))
    results = model.postprocess(outputs)
    now = time.time()
    rows = []
    for row, (i, result) in enumerate(zip(index, results)):
        tensors = {k: {"shape": list(v[row].shape), "dtype": str(v.dtype), "data": v[row].ravel().tolist()}
                   for k, v in outputs.items()}
        rows.append((part.keys[i], name, version, result.get("label"), result.get("score"),
                     json.dumps(result), json.dumps(tensors), now))
    return rows


class Lookup:
    """Precomputed predictions by key, for ``edgekit serve --lookup-db``."""

    def __init__(self, db_url: str, table: str = "predictions"):
        self.db, self.table = SqlDatabase(db_url, flag="--lookup-db"), checked_table(table)
        with self.db.connect() as tx:
            if not tx.table_exists(self.table):
                raise EdgekitError(f"--lookup-db {db_url} has no table {self.table!r}",
                                   "fill it first with: edgekit predict BUNDLE --input ... --db ...")

    def get(self, model: str, version: str, key: str) -> Optional[tuple[dict, dict]]:
        """(post-processed result, output tensors) for ``key``, or None."""
        with self.db.connect() as tx:
            row = tx.one(f"SELECT result, outputs FROM {self.table} WHERE key = ? AND model = ? AND version = ?",
                         (key, model, version))
        if row is None:
            return None
        tensors = {k: np.asarray(v["data"], dtype=v["dtype"]).reshape([1] + v["shape"])
                   for k, v in json.loads(row[1]).items()}
        return json.loads(row[0]), tensors
