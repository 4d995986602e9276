"""The log wire format: what a device ships and the collector accepts, defined once.

A batch is ``{"schema_version", "store", "records", "feedback", "health"}`` (health: the log
store's own counters - dropped, pending, oldest_pending, dead_letter - for fleet monitoring). ``store`` is the device log
store's own UUID: a reinstalled or recovered store starts its row ids at 1 again, so record
identity at the collector is (device, store, id), never (device, id).

``Batch.parse`` is the one validator (types, ranges, finite numbers, string lengths, array
encodings, nesting depth). It runs before anything touches the database, so a hostile or broken
batch is a 400 with the reason, never a 500 or a stored row that later breaks a fleet report.
Hand-written rather than generic: the collector checks tens of thousands of records a second.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..spec import DTYPES

SCHEMA_VERSION = 3  # 1: no store id (read as store ""), no cached flag; 2: summaries of <= 8 stats, no health
MAX_ID = 2**63 - 1  # BIGINT in PostgreSQL
MAX_TIME = 4102444800.0  # 2100-01-01: a device clock beyond that is broken
MAX_DIMS = 8
MAX_LABEL_BYTES = 64 * 1024
MAX_SUMMARY_STATS = 32  # edgekit.features: mean, std, min, max, nonfinite, quadrants, channels
HEALTH_FIELDS = ("dropped", "pending", "oldest_pending", "dead_letter")


class BatchError(ValueError):
    """A malformed batch (HTTP 400), with the reason."""


_DTYPE_NAMES: dict = {}


def encode_array(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    # str(dtype) costs microseconds (numpy builds the name each time); the log store calls this
    # twice per prediction, so names are looked up once per dtype.
    name = _DTYPE_NAMES.get(a.dtype)
    if name is None:
        name = _DTYPE_NAMES.setdefault(a.dtype, str(a.dtype))
    return {"dtype": name, "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}


def decode_array(d: dict) -> np.ndarray:
    """The inverse of encode_array; raises ValueError on anything that does not add up."""
    if not isinstance(d, dict) or d.get("dtype") not in DTYPES:
        raise ValueError(f"not an encoded array of a known dtype: {str(d)[:80]}")
    return np.frombuffer(base64.b64decode(d["b64"], validate=True), dtype=d["dtype"]).reshape(d["shape"])


def finite_or_none(value: float) -> Optional[float]:
    """JSON has no NaN: summaries of bad inputs carry null instead."""
    return value if math.isfinite(value) else None


def _reject_constant(name: str):
    raise BatchError(f"{name} is not a JSON number; send finite numbers only")


def _fail(where: str, what: str):
    raise BatchError(f"{where} {what}")


def _int(value, where: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_ID:
        _fail(where, f"must be an integer in [0, 2^63), got {str(value)[:40]}")
    return value


def _number(value, where: str, low: float = 0.0, high: float = 1e15) -> float:
    # bounds first: an int like 10**400 has no float, and math.isfinite would raise on it
    if type(value) not in (int, float) or not low <= value <= high or not math.isfinite(value):
        _fail(where, f"must be a finite number in [{low:g}, {high:g}], got {str(value)[:40]}")
    return float(value)


def _text(value, where: str, max_len: int = 200, empty: bool = True) -> str:
    if type(value) is not str or len(value) > max_len or (not empty and not value):
        _fail(where, f"must be a string of {'0' if empty else '1'}-{max_len} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _fail(where, "holds characters that are not valid UTF-8 (a lone surrogate)")
    return value


def _opt_text(value, where: str, max_len: int = 200) -> str:
    return "" if value is None else _text(value, where, max_len)


def _arrays(value, where: str) -> dict:
    if type(value) is not dict or len(value) > 64:
        _fail(where, "must be an object of at most 64 encoded arrays")
    for name, enc in value.items():
        _text(name, f"{where} key", 256, empty=False)
        at = f"{where}.{name}"
        if type(enc) is not dict or set(enc) != {"dtype", "shape", "b64"}:
            _fail(at, "must be {dtype, shape, b64}")
        if enc["dtype"] not in DTYPES:
            _fail(f"{at}.dtype", f"must be one of {', '.join(sorted(DTYPES))}")
        shape = enc["shape"]
        if type(shape) is not list or len(shape) > MAX_DIMS or any(type(d) is not int or not 0 <= d < 2**31 for d in shape):
            _fail(f"{at}.shape", f"must be a list of at most {MAX_DIMS} sizes")
        b64 = enc["b64"]
        count = math.prod(shape) * np.dtype(enc["dtype"]).itemsize
        if type(b64) is not str or len(b64) != 4 * ((count + 2) // 3):
            _fail(f"{at}.b64", f"must be the base64 of {count} bytes ({enc['dtype']} x {shape})")
    return value


def _summary(value, where: str) -> Optional[dict]:
    if value is None:
        return None
    if type(value) is not dict or len(value) > 64:
        _fail(where, "must be an object or null")
    for name, stats in value.items():
        _text(name, f"{where} key", 256, empty=False)
        if type(stats) is not dict or len(stats) > MAX_SUMMARY_STATS:
            _fail(f"{where}.{name}", "must be an object of statistics")
        for key, number in stats.items():
            if key == "shape":
                if type(number) is not list or len(number) > MAX_DIMS or any(type(d) is not int for d in number):
                    _fail(f"{where}.{name}.shape", "must be a list of sizes")
            elif number is not None:
                _number(number, f"{where}.{name}.{key}", -1e300, 1e300)
    return value


def _label(value, where: str):
    """Labels are JSON scalars or (for batch predictions) a list of them, one per row."""
    scalar = (str, int, float, bool, type(None))
    if isinstance(value, list):
        if len(value) > 65536 or any(type(v) not in scalar for v in value):
            _fail(where, "must be a scalar or a list of scalars")
        items = value
    elif type(value) in scalar:
        items = [value]
    else:
        _fail(where, "must be a scalar or a list of scalars")
    for item in items:
        if type(item) is float and not math.isfinite(item):
            _fail(where, "must hold finite numbers")
        if type(item) is str:
            _text(item, where, 1000)
    if value is not None and len(json.dumps(value)) > MAX_LABEL_BYTES:
        _fail(where, f"is larger than {MAX_LABEL_BYTES} bytes")
    return value


@dataclass(frozen=True)
class LogRecord:
    id: int
    request_id: str
    time: float
    model: str
    outputs: dict
    version: str = ""
    variant: str = ""
    latency_ms: Optional[float] = None
    fallbacks: tuple[str, ...] = ()
    cached: bool = False
    inputs: Optional[dict] = None
    summary: Optional[dict] = None

    @classmethod
    def parse(cls, r, where: str) -> "LogRecord":
        if type(r) is not dict:
            _fail(where, "must be an object")
        fallbacks = r.get("fallbacks") or []
        if type(fallbacks) is not list or len(fallbacks) > 32:
            _fail(f"{where}.fallbacks", "must be a list of at most 32 strings")
        cached = r.get("cached", False)
        if type(cached) is not bool:
            _fail(f"{where}.cached", "must be true or false")
        inputs = r.get("inputs")
        return cls(
            id=_int(r.get("id"), f"{where}.id"),
            request_id=_text(r.get("request_id"), f"{where}.request_id", 128, empty=False),
            time=_number(r.get("time"), f"{where}.time", 0.0, MAX_TIME),
            model=_text(r.get("model"), f"{where}.model", 200, empty=False),
            outputs=_arrays(r.get("outputs"), f"{where}.outputs"),
            version=_opt_text(r.get("version"), f"{where}.version"),
            variant=_opt_text(r.get("variant"), f"{where}.variant"),
            latency_ms=None if r.get("latency_ms") is None else _number(r["latency_ms"], f"{where}.latency_ms", 0.0, 1e9),
            fallbacks=tuple(_text(f, f"{where}.fallbacks[]", 500) for f in fallbacks),
            cached=cached,
            inputs=None if inputs is None else _arrays(inputs, f"{where}.inputs"),
            summary=_summary(r.get("summary"), f"{where}.summary"),
        )


@dataclass(frozen=True)
class Feedback:
    id: int
    request_id: str
    time: float
    label: Any = None
    outcome: Optional[str] = None

    @classmethod
    def parse(cls, f, where: str) -> "Feedback":
        if type(f) is not dict:
            _fail(where, "must be an object")
        outcome = f.get("outcome")
        return cls(
            id=_int(f.get("id"), f"{where}.id"),
            request_id=_text(f.get("request_id"), f"{where}.request_id", 128, empty=False),
            time=_number(f.get("time"), f"{where}.time", 0.0, MAX_TIME),
            label=_label(f.get("label"), f"{where}.label"),
            outcome=None if outcome is None else _text(outcome, f"{where}.outcome", 200),
        )


def _health(value, where: str) -> Optional[dict]:
    if value is None:
        return None
    if type(value) is not dict or not set(value) <= set(HEALTH_FIELDS):
        _fail(where, f"must be an object of {', '.join(HEALTH_FIELDS)}")
    out = {}
    for key, number in value.items():
        if number is not None:
            out[key] = _number(number, f"{where}.{key}", 0.0, MAX_TIME if key == "oldest_pending" else 1e15)
    return out


@dataclass(frozen=True)
class Batch:
    store: str
    records: tuple[LogRecord, ...]
    feedback: tuple[Feedback, ...]
    schema_version: int = SCHEMA_VERSION
    health: Optional[dict] = None

    @classmethod
    def parse(cls, body: bytes) -> "Batch":
        try:
            data = json.loads(body, parse_constant=_reject_constant)
        except RecursionError:
            raise BatchError("the batch is nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            if isinstance(exc, BatchError):
                raise
            raise BatchError(f"not JSON: {exc}") from None
        if type(data) is not dict:
            raise BatchError("the batch must be a JSON object")
        version = data.get("schema_version", 1)
        if type(version) is not int or not 1 <= version <= SCHEMA_VERSION:
            raise BatchError(f"schema_version must be 1-{SCHEMA_VERSION}, got {str(version)[:20]}; upgrade the collector")
        unknown = set(data) - {"schema_version", "store", "records", "feedback", "health"}
        if unknown:
            raise BatchError(f"unknown batch field {sorted(unknown)[0]!r}")
        records, feedback = data.get("records", []), data.get("feedback", [])
        if type(records) is not list or type(feedback) is not list:
            raise BatchError("records and feedback must be lists")
        store = data.get("store", "")
        if version >= 2:
            _text(store, "store", 64, empty=False)
        return cls(store=_opt_text(store, "store", 64),
                   records=tuple(LogRecord.parse(r, f"records[{i}]") for i, r in enumerate(records)),
                   feedback=tuple(Feedback.parse(f, f"feedback[{i}]") for i, f in enumerate(feedback)),
                   schema_version=version, health=_health(data.get("health"), "health"))

    @staticmethod
    def dumps(store: str, records: list[dict], feedback: list[dict], health: Optional[dict] = None) -> bytes:
        """The device side: rows as the store reads them, in the canonical (key-sorted) form
        that the idempotency key is computed over."""
        batch = {"schema_version": SCHEMA_VERSION, "store": store, "records": records, "feedback": feedback}
        if health is not None:
            batch["health"] = health
        return json.dumps(batch, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
