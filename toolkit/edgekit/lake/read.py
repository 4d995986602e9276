"""The lake as a read-only database: the collector's tables as views over the lake's files, in
DuckDB or Spark SQL, behind the interface monitoring and curation already use (``read()``, and a
transaction's ``all``, ``one``, ``stream`` and ``int_floor``). The SQL they send the collector's
database runs here unchanged, so the numbers are the database's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..errors import EdgekitError, first_line
from .layout import TABLES, files, quoted, read_state, sql_columns

ENGINES: dict[str, type] = {}


def engine(name: str):
    def wrap(cls):
        ENGINES[name] = cls
        cls.kind = name
        return cls

    return wrap


class _Engine:
    kind = ""

    def query(self, sql: str, params: tuple) -> list[tuple]:
        raise NotImplementedError

    def stream(self, sql: str, params: tuple, size: int) -> Iterator[list]:
        raise NotImplementedError

    def close(self) -> None:
        pass


@engine("duckdb")
class DuckDBEngine(_Engine):
    """One machine: DuckDB reads the files where they are (filters reach the Parquet row groups)."""

    def __init__(self, lake: Path, runs: int, master: str = ""):
        import duckdb

        self.con = duckdb.connect()
        for table in TABLES:
            found = files(lake, table, runs)
            self.con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({quoted(found)})" if found else
                             f"CREATE TABLE {table} ({sql_columns(table, 'duckdb')})")

    def query(self, sql, params):
        return self.con.execute(sql, list(params)).fetchall()

    def stream(self, sql, params, size):
        cur = self.con.cursor()
        cur.execute(sql, list(params))
        while rows := cur.fetchmany(size):
            yield rows

    def close(self):
        self.con.close()


@engine("spark")
class SparkEngine(_Engine):
    """A cluster (local[*] by default): each table a temporary view over the lake's files, with the
    lake's own schema (no inference, so a model called 123 stays text)."""

    def __init__(self, lake: Path, runs: int, master: str = "local[*]"):
        from .spark import session

        self.spark = session(master or "local[*]", "edgekit lake")
        for table in TABLES:
            schema = sql_columns(table, "spark")
            found = [str(p) for p in files(lake, table, runs)]
            frame = (self.spark.read.schema(schema).parquet(*found) if found
                     else self.spark.createDataFrame([], schema))
            frame.createOrReplaceTempView(table)

    def _frame(self, sql, params):
        try:
            return self.spark.sql(sql, args=list(params))
        except Exception as exc:
            raise EdgekitError(f"Spark could not run a lake query: {first_line(exc)[:300]}") from None

    def query(self, sql, params):
        return [tuple(r) for r in self._frame(sql, params).collect()]

    def stream(self, sql, params, size):
        rows = []
        for row in self._frame(sql, params).toLocalIterator():
            rows.append(tuple(row))
            if len(rows) >= size:
                yield rows
                rows = []
        if rows:
            yield rows

    def close(self):
        self.spark.stop()


class LakeDatabase:
    """A lake made by ``edgekit collector lake``, read through ``engine`` (duckdb or spark)."""

    def __init__(self, path: str | Path, engine: str = "duckdb", master: str = ""):
        if engine not in ENGINES:
            raise EdgekitError(f"unknown lake engine {engine!r}", f"use {' or '.join(ENGINES)}")
        self.path = Path(path)
        if not self.path.is_dir():
            raise EdgekitError(f"--lake {path}: there is no folder there", "make the lake with: edgekit collector lake")
        self.state = read_state(self.path)
        self.url = f"lake:{self.path}"
        self.kind = engine
        self.engine = ENGINES[engine](self.path, self.state.runs, master)

    @property
    def received_until(self) -> float:
        """What the lake holds is the collector's rows received up to this time."""
        return self.state.received_until

    def read(self) -> "LakeTx":
        return LakeTx(self.engine)

    connect = read

    def close(self) -> None:
        self.engine.close()


class LakeTx:
    """The read side of a collector transaction (``_sql.Tx``), over the lake."""

    def __init__(self, engine: _Engine):
        self.engine = engine

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def all(self, sql: str, params=()):
        return self.engine.query(sql, tuple(params))

    def one(self, sql: str, params=()):
        rows = self.engine.query(sql, tuple(params))
        return rows[0] if rows else None

    def stream(self, sql: str, params=(), size: int = 1000) -> Iterator[list]:
        return self.engine.stream(sql, tuple(params), size)

    def int_floor(self, expr: str) -> str:
        return f"CAST(FLOOR({expr}) AS BIGINT)"

    def table_exists(self, name: str) -> bool:
        return name in TABLES

    def execute(self, sql: str, params=()):
        raise EdgekitError("the lake is read-only", "run commands that record state against the collector's --db")

    executemany = execute
