"""``edgekit predict --engine spark``: the same batch prediction, scored on Spark executors.

Spark reads the Parquet (or CSV) table and splits it; ``mapInPandas`` hands each executor's
Python worker Arrow batches, and the worker scores them with the bundle's own runtime (its
fallback chain, its processing, its post-processing) through the functions the single-machine
path uses (``predictions._chunk_of`` and ``predictions._score``), so the rows are the same. The
bundle travels with ``SparkContext.addFile`` and is loaded once per worker process (Spark reuses
its Python workers), not once per batch. The scored rows stream back to the driver
(``toLocalIterator``, one partition at a time) and are written as the single-machine path writes
them: one transaction per chunk, keys already in the table skipped, so a run resumes.

Rows need their own key on Spark (``--key-column``): a distributed table has no row order to
number rows by.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from ..errors import DataError, EdgekitError
from ..lake.spark import session

SCHEMA = ("key string, model string, version string, label string, score double, result string, outputs string, "
          "created double")
_MODELS: dict = {}  # in an executor's Python worker: bundle path -> the loaded runtime


def _runtime(path: str, threads: Optional[int]):
    if path not in _MODELS:
        from ..runtime import load

        _MODELS[path] = load(path, threads=threads)
    return _MODELS[path]


def score_batches(bundle_name: str, key_column: str, batch_size: int, threads: Optional[int]):
    """The function mapInPandas runs on each executor: pandas batches in, prediction rows out."""

    def score(batches):
        import pandas as pd
        import pyarrow as pa
        from pyspark import SparkFiles

        from .predictions import _chunk_of, _score

        model = _runtime(SparkFiles.get(bundle_name), threads)
        names = [s["name"] for s in model.inputs]
        kind = model.preprocess.kind if model.preprocess else ""
        name, version = model.name, model.version or "1"
        for frame in batches:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            columns = {c: table.column(c) for c in table.schema.names}
            keys = [str(k) for k in columns[key_column].to_pylist()]
            part = _chunk_of(columns, keys, names, kind, model, key_column)
            rows = []
            for start in range(0, len(keys), batch_size):
                rows += _score(model, part, list(range(start, min(start + batch_size, len(keys)))), name, version)
            yield pd.DataFrame(rows, columns=[c.split()[0] for c in SCHEMA.split(", ")])

    return score


def predict_with_spark(bundle: str | Path, source: Path, db_url: str, table: str = "predictions",
                       key_column: str = "key", batch_size: int = 64, chunk: int = 1024,
                       progress: Callable[[int, Optional[int]], None] = lambda done, total: None,
                       threads: Optional[int] = None, master: str = "local[*]") -> dict:
    """Score ``source`` (Parquet or CSV) on Spark into ``table``; returns counts as predict_to_db does."""
    from .._sql import SqlDatabase
    from ..bundle import read_manifest
    from .predictions import _table_sql, checked_table, write_rows

    table = checked_table(table)
    source, bundle = Path(source), Path(bundle)
    if source.suffix.lower() not in (".parquet", ".pq", ".csv") and not source.is_dir():
        raise DataError(f"--engine spark reads Parquet or CSV, not {source.name}",
                        "convert the input to Parquet, or drop --engine spark")
    if not source.exists() or not bundle.is_file():
        raise DataError(f"{source if not source.exists() else bundle} does not exist", "check the path")
    manifest = read_manifest(bundle)
    name, version = manifest.model.name, manifest.model.version or "1"
    db = SqlDatabase(db_url)
    with db.connect() as tx:
        tx.execute(_table_sql(table))
    spark = session(master, "edgekit predict")
    start = time.perf_counter()
    try:
        reader = spark.read.option("header", "true").option("inferSchema", "true") if source.suffix.lower() == ".csv" \
            else spark.read
        frame = reader.csv(str(source)) if source.suffix.lower() == ".csv" else reader.parquet(str(source))
        if key_column not in frame.columns:
            raise DataError(f"{source} has no {key_column!r} column; on Spark each row needs its own key",
                            "add a key column (or name it with --key-column), or drop --engine spark")
        total = frame.count()
        spark.sparkContext.addFile(str(bundle.resolve()))
        scored = frame.mapInPandas(score_batches(bundle.name, key_column, batch_size, threads), SCHEMA)
        written = done = 0
        rows: list[tuple] = []
        for row in scored.toLocalIterator():
            rows.append(tuple(row))
            if len(rows) >= chunk:
                written += write_rows(db, table, rows)
                done += len(rows)
                rows = []
                progress(done, total)
        if rows:
            written += write_rows(db, table, rows)
            done += len(rows)
            progress(done, total)
    except Exception as exc:
        if isinstance(exc, EdgekitError):
            raise
        raise EdgekitError(f"Spark failed: {str(exc).strip().splitlines()[-1][:300]}") from None
    finally:
        spark.stop()
    return {"model": name, "version": version, "table": table, "rows": done, "written": written,
            "skipped_existing": done - written, "seconds": round(time.perf_counter() - start, 2), "engine": "spark"}
