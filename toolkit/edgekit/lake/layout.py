"""What a lake holds and where: one folder per table, one file per table and run, and a state
file that says which runs are in. Writer and readers share these definitions.

Tables kept as a log grow by the rows each run adds (``records`` and ``feedback`` by their
receipt, in one folder per UTC day of their own time; ``sketches`` by how much each hourly
count grew). Small tables (devices, references, alert state) are written whole each run and only
the last run's file is read. A file is part of the lake once the state file names its run: files
of a run that did not finish are never read, and the next run replaces them.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from pathlib import Path

from .._io import atomic_write_bytes
from .._schema import Document
from ..errors import EdgekitError

STATE = "_edgekit_lake.json"
SCHEMA_VERSION = 1

# table -> columns as (name, type); types are the collector's: text, bigint, int, double.
# token hashes, raw summaries and the write-side tables stay in the database.
TABLES = {
    "records": (("device", "text"), ("store", "text"), ("record_id", "bigint"), ("request_id", "text"),
                ("time", "double"), ("model", "text"), ("version", "text"), ("variant", "text"),
                ("latency_ms", "double"), ("fallbacks", "text"), ("outputs", "text"), ("inputs", "text"),
                ("cached", "int"), ("received", "double"), ("rows", "int"), ("top_class", "int"),
                ("confidence", "double"), ("margin", "double"), ("entropy", "double"), ("out_norm", "double"),
                ("nonfinite", "int"), ("out_hash", "text"), ("has_fallback", "int"), ("in_hash", "text")),
    "feedback": (("device", "text"), ("store", "text"), ("feedback_id", "bigint"), ("request_id", "text"),
                 ("time", "double"), ("label", "text"), ("outcome", "text"), ("received", "double")),
    "sketches": (("model", "text"), ("version", "text"), ("device", "text"), ("hour", "bigint"), ("feature", "text"),
                 ("bucket", "int"), ("n", "bigint")),
    "devices": (("name", "text"), ("revoked", "int"), ("created", "double"), ("last_seen", "double"),
                ("grp", "text"), ("dropped", "bigint"), ("pending", "bigint"), ("oldest_pending", "double"),
                ("dead_letter", "bigint"), ("health_time", "double")),
    "model_devices": (("model", "text"), ("device", "text")),
    "monitor_reference": (("model", "text"), ("created", "double"), ("body", "text")),
    "monitor_alerts": (("rule", "text"), ("scope", "text"), ("fired", "double")),
}
LOGS = ("records", "feedback", "sketches")  # the rest are written whole each run
WHOLE = tuple(t for t in TABLES if t not in LOGS)
BY_DAY = {"records": "time", "feedback": "time"}  # a log's folder per UTC day of this column
_PART = re.compile(r"part-(\d+)\.parquet$")


def arrow_schema(table: str):
    import pyarrow as pa

    kinds = {"text": pa.string(), "bigint": pa.int64(), "int": pa.int32(), "double": pa.float64()}
    return pa.schema([(name, kinds[kind]) for name, kind in TABLES[table]])


def arrow_table(rows: list, schema):
    """Database rows (tuples in the schema's column order) as an Arrow table of that schema."""
    import pyarrow as pa

    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    return pa.Table.from_arrays([pa.array(list(c), type=f.type) for c, f in zip(columns, schema)], schema=schema)


def sql_columns(table: str, dialect: str) -> str:
    """The columns as a CREATE TABLE (DuckDB) or a DDL schema string (Spark) spells them."""
    kinds = {"duckdb": {"text": "VARCHAR", "bigint": "BIGINT", "int": "INTEGER", "double": "DOUBLE"},
             "spark": {"text": "STRING", "bigint": "BIGINT", "int": "INT", "double": "DOUBLE"}}[dialect]
    return ", ".join(f"`{name}` {kinds[kind]}" if dialect == "spark" else f'"{name}" {kinds[kind]}'
                     for name, kind in TABLES[table])


def day_of(t) -> str:
    """The UTC day folder of a time; a time no calendar holds (a broken device clock) has its own."""
    try:
        if t is not None and math.isfinite(t):
            return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        pass
    return "invalid"


class LakeState(Document):
    """``_edgekit_lake.json``: the runs that are in, and up to when the collector's rows are."""

    runs: int
    received_until: float
    schema_version: int = SCHEMA_VERSION


def read_state(folder: Path) -> LakeState:
    import msgspec

    path = Path(folder) / STATE
    try:
        state = msgspec.json.decode(path.read_bytes(), type=LakeState)
    except FileNotFoundError:
        raise EdgekitError(f"{folder} is not a telemetry lake (no {STATE})",
                           "make one with: edgekit collector lake --out DIR (edgekit never writes into a folder "
                           "it did not make)") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EdgekitError(f"{path} is unreadable ({exc})", "make the lake again in a new folder") from None
    if state.schema_version > SCHEMA_VERSION:
        raise EdgekitError(f"{folder} is a lake of schema {state.schema_version}, newer than this edgekit's "
                           f"({SCHEMA_VERSION})", "upgrade edgekit")
    return state


def write_state(folder: Path, state: LakeState) -> None:
    import msgspec

    atomic_write_bytes(Path(folder) / STATE, msgspec.json.encode(state))


def quoted(paths) -> str:
    """A list of paths as an SQL list literal (DuckDB's read_parquet takes one)."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def run_of(path: Path) -> int:
    match = _PART.search(path.name)
    return int(match.group(1)) if match else -1


def files(folder: Path, table: str, runs: int) -> list[Path]:
    """The table's files that are in the lake: every committed run's for a log, the last one's
    for a table written whole."""
    found = sorted(p for p in (Path(folder) / table).rglob("part-*.parquet") if 0 < run_of(p) <= runs)
    if table in LOGS or not found:
        return found
    last = max(run_of(p) for p in found)
    return [p for p in found if run_of(p) == last]


def uncommitted(folder: Path, runs: int) -> list[Path]:
    """Files a run that did not finish left behind (never read; removed by the next run)."""
    return [p for table in TABLES for p in (Path(folder) / table).rglob("part-*.parquet") if run_of(p) > runs]
