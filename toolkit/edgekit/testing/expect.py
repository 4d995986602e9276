"""Data expectations: a suite of checks over named columns, run in one vectorised pass per chunk.

As in Great Expectations each check has an observed value and a success flag; as in Deequ all of
a suite's checks share one pass over the data, chunk by chunk (never one scan per check, never
the whole table in memory). Checks are grouped by the six data-quality dimensions and each kind
is one small class that registers itself; a suite file (TOML or JSON) lists them:

    [[expect]]
    kind = "range"            # validity
    column = "input"
    min = 0.0
    max = 1.0
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from .._schema import Document, SchemaError, field, from_dict, replace, to_dict
from ..errors import DataError, EdgekitError
from .._io import read_toml
from ..tables import Table, open_table

DIMENSIONS = ("completeness", "validity", "consistency", "timeliness", "integrity", "accuracy")
KINDS: dict[str, type["Check"]] = {}
_MULT = np.uint64(0x9E3779B97F4A7C15)


class Outcome(Document):
    kind: str
    dimension: str
    column: str
    success: bool
    observed: Any
    expected: str
    failing_rows: int = 0
    rows: int = 0

    @property
    def failing_share(self) -> float:
        return self.failing_rows / self.rows if self.rows else 0.0


class Check(Document):
    """One expectation. Subclasses set ``kind`` and ``dimension`` and implement ``update`` (one
    chunk, vectorised) and ``finish``; ``mostly`` is the share of rows that must pass."""

    kind: ClassVar[str]
    dimension: ClassVar[str]
    column: str = ""
    mostly: float = 1.0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            KINDS[cls.kind] = cls

    def validate(self) -> None:
        if not 0.0 <= self.mostly <= 1.0:
            raise ValueError(f"mostly must be within [0, 1], got {self.mostly}")

    def start(self) -> dict:
        return {"rows": 0, "failing": 0}

    def update(self, state: dict, chunk: dict[str, np.ndarray]) -> None:
        values = self._column(chunk)
        state["rows"] += len(values)
        state["failing"] += int(self.failing(values, chunk).sum())

    def failing(self, values: np.ndarray, chunk: dict) -> np.ndarray:
        raise NotImplementedError

    def finish(self, state: dict) -> Outcome:
        rows, bad = state["rows"], state["failing"]
        ok = rows == 0 or bad <= (1.0 - self.mostly) * rows + 1e-9
        return self._outcome(ok, f"{bad} of {rows} rows fail ({bad / rows:.2%})" if rows else "no rows",
                             self.expectation(), bad, rows)

    def expectation(self) -> str:
        return ""

    def _outcome(self, ok, observed, expected, bad=0, rows=0) -> Outcome:
        column = self.column or "+".join(getattr(self, "columns", ()))
        return Outcome(self.kind, self.dimension, column, bool(ok), observed, expected, bad, rows)

    def _column(self, chunk: dict) -> np.ndarray:
        if self.column not in chunk:
            raise DataError(f"expectation {self.kind} needs column {self.column!r}; the data has "
                            f"{', '.join(chunk)}", "fix the suite or the data")
        return chunk[self.column]

    def to_dict(self) -> dict:
        return {"kind": self.kind, **{k: v for k, v in to_dict(self).items() if v not in ((), None, "")}}

    def needs(self) -> set[str]:
        """The columns this check reads."""
        named = [self.column, getattr(self, "key", ""), getattr(self, "target", ""), *getattr(self, "columns", ())]
        return {c for c in named if c}


def _rows(values: np.ndarray) -> np.ndarray:
    return values.reshape(len(values), -1)


def _mostly(share_ok: float) -> str:
    return "" if share_ok >= 1.0 else f" in at least {share_ok:.1%} of rows"


# -- completeness ------------------------------------------------------------------------------

class Present(Check):
    kind = "present"
    dimension = "completeness"
    columns: tuple[str, ...] = ()

    def start(self):
        return {"missing": set()}

    def update(self, state, chunk):
        state["missing"] |= {c for c in self.columns if c not in chunk}

    def finish(self, state):
        missing = sorted(state["missing"])
        return self._outcome(not missing, f"missing {', '.join(missing)}" if missing else "all present",
                             f"columns {', '.join(self.columns)}")


class NoMissing(Check):
    kind = "no_missing"
    dimension = "completeness"

    def failing(self, values, chunk):
        if values.dtype.kind in "fc":
            return ~np.isfinite(_rows(values)).all(axis=1)
        if values.dtype == object:
            return np.asarray([v is None or v == "" for v in values])
        return np.zeros(len(values), bool)

    def expectation(self):
        return f"no NaN, infinite or empty values{_mostly(self.mostly)}"


class RowCount(Check):
    kind = "row_count"
    dimension = "completeness"
    min: int = 1
    max: Optional[int] = None

    def update(self, state, chunk):
        state["rows"] += len(next(iter(chunk.values()))) if chunk else 0

    def finish(self, state):
        n = state["rows"]
        ok = n >= self.min and (self.max is None or n <= self.max)
        return self._outcome(ok, n, f"{self.min} to {self.max if self.max is not None else 'any'} rows")


# -- validity ------------------------------------------------------------------------------------

def dtype_name(dtype) -> str:
    """numpy's name, except that text is 'str' whatever its width ('<U7' and '<U9' alike)."""
    dtype = np.dtype(dtype)
    return {"U": "str", "S": "bytes", "O": "object"}.get(dtype.kind, dtype.name)


class Dtype(Check):
    kind = "dtype"
    dimension = "validity"
    dtypes: tuple[str, ...] = ()

    def start(self):
        return {"seen": set()}

    def update(self, state, chunk):
        state["seen"].add(dtype_name(self._column(chunk).dtype))

    def finish(self, state):
        bad = sorted(state["seen"] - set(self.dtypes))
        return self._outcome(not bad, ", ".join(sorted(state["seen"])), f"one of {', '.join(self.dtypes)}")


class Shape(Check):
    """The shape of each row (after the first axis); -1 for a dimension of any size."""

    kind = "shape"
    dimension = "validity"
    shape: tuple[int, ...] = ()

    def start(self):
        return {"seen": set()}

    def update(self, state, chunk):
        state["seen"].add(tuple(self._column(chunk).shape[1:]))

    def finish(self, state):
        def fits(s):
            return len(s) == len(self.shape) and all(w in (-1, g) for w, g in zip(self.shape, s))

        bad = [s for s in state["seen"] if not fits(s)]
        return self._outcome(not bad, " or ".join("x".join(map(str, s)) or "scalar" for s in sorted(state["seen"])),
                             "x".join(map(str, self.shape)) or "scalar")


class Range(Check):
    """Every value of a row within [min, max] (pixel intensities, token ids inside the vocabulary)."""

    kind = "range"
    dimension = "validity"
    min: Optional[float] = None
    max: Optional[float] = None

    def start(self):
        return {"rows": 0, "failing": 0, "lo": math.inf, "hi": -math.inf}

    def update(self, state, chunk):
        values = _rows(self._column(chunk))
        state["rows"] += len(values)
        if not values.size:
            return
        bad = np.zeros(len(values), bool)
        with np.errstate(invalid="ignore"):
            if self.min is not None:
                bad |= (values < self.min).any(axis=1)
            if self.max is not None:
                bad |= (values > self.max).any(axis=1)
        state["failing"] += int(bad.sum())
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if finite.size:
            state["lo"], state["hi"] = min(state["lo"], float(finite.min())), max(state["hi"], float(finite.max()))

    def finish(self, state):
        out = super().finish(state)
        return replace(out, observed=f"{out.observed}; values in [{state['lo']:g}, {state['hi']:g}]")

    def expectation(self):
        return f"values within [{self.min}, {self.max}]{_mostly(self.mostly)}"


class AllowedValues(Check):
    kind = "allowed_values"
    dimension = "validity"
    values: tuple[str, ...] = ()

    def failing(self, values, chunk):
        allowed = np.asarray(self.values, dtype=object)
        return ~np.isin(np.asarray([str(v) for v in values.ravel()], dtype=object), allowed).reshape(len(values), -1).all(axis=1)

    def expectation(self):
        shown = ", ".join(self.values[:12]) + ("..." if len(self.values) > 12 else "")
        return f"values in {{{shown}}}{_mostly(self.mostly)}"


# -- consistency ---------------------------------------------------------------------------------

class MaskMatchesPadding(Check):
    """Text inputs: the attention mask is 0 exactly where the ids are padding."""

    kind = "mask_matches_padding"
    dimension = "consistency"
    ids: str = "input_ids"
    pad_id: int = 0

    def failing(self, values, chunk):
        ids = chunk[self.ids]
        return ((values == 0) != (ids == self.pad_id)).reshape(len(values), -1).any(axis=1)

    def expectation(self):
        return f"{self.column} is 0 exactly where {self.ids} == {self.pad_id}"


class Rule(Check):
    """A user's rule: ``module:function`` taking the chunk (a dict of columns) and returning one
    boolean per row, True where the row is fine."""

    kind = "rule"
    dimension = "consistency"
    function: str = ""

    def failing(self, values, chunk):
        rule = _import(self.function)
        try:
            ok = np.asarray(rule(chunk), dtype=bool)
        except Exception as exc:  # noqa: BLE001 - the user's code: say whose and what, in one line
            raise EdgekitError(f"rule {self.function} raised {type(exc).__name__}: {str(exc)[:200]}",
                               "fix the rule; it gets the chunk as a dict of column arrays") from None
        if ok.shape != (len(values),):
            raise EdgekitError(f"rule {self.function} returned shape {ok.shape}, not one boolean per row")
        return ~ok

    def _column(self, chunk):
        return chunk[self.column] if self.column else next(iter(chunk.values()))

    def expectation(self):
        return f"{self.function} holds{_mostly(self.mostly)}"


def _import(ref: str):
    from .._hooks import import_callable

    return import_callable(ref, "rule")


# -- timeliness ----------------------------------------------------------------------------------

class NotInFuture(Check):
    kind = "not_in_future"
    dimension = "timeliness"
    skew_s: float = 300.0

    def failing(self, values, chunk):
        return np.asarray(values, dtype=np.float64) > time.time() + self.skew_s

    def expectation(self):
        return f"no timestamp later than now + {self.skew_s:g} s"


class Recent(Check):
    kind = "recent"
    dimension = "timeliness"
    max_age_s: float = 86400.0

    def failing(self, values, chunk):
        return np.asarray(values, dtype=np.float64) < time.time() - self.max_age_s

    def expectation(self):
        return f"timestamps within the last {self.max_age_s:g} s{_mostly(self.mostly)}"


class Monotonic(Check):
    kind = "monotonic"
    dimension = "timeliness"

    def start(self):
        return {"rows": 0, "failing": 0, "last": -math.inf}

    def update(self, state, chunk):
        values = np.asarray(self._column(chunk), dtype=np.float64)
        if not len(values):
            return
        previous = np.concatenate([[state["last"]], values[:-1]])
        state["failing"] += int((values < previous).sum())
        state["rows"] += len(values)
        state["last"] = float(values[-1])

    def expectation(self):
        return "non-decreasing"


# -- integrity -------------------------------------------------------------------------------------

def row_hashes(values: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row of any array, vectorised (a multiply-xorshift over the row's bytes)."""
    if values.dtype == object:
        import hashlib

        return np.asarray([int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little")
                           for v in values], dtype=np.uint64)
    raw = np.ascontiguousarray(values).reshape(len(values), -1).view(np.uint8)
    pad = (-raw.shape[1]) % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((len(raw), pad), np.uint8)], axis=1)
    words = raw.view(np.uint64)
    h = np.full(len(words), np.uint64(0xCBF29CE484222325))
    with np.errstate(over="ignore"):
        for j in range(words.shape[1]):
            h = (h ^ words[:, j]) * _MULT
            h ^= h >> np.uint64(29)
    return h


def combined_row_hashes(columns: dict, names) -> np.ndarray:
    """One 64-bit hash per row over several columns (exact copies of a row hash alike)."""
    h = np.zeros(len(columns[names[0]]), np.uint64)
    with np.errstate(over="ignore"):
        for name in names:
            h = h * _MULT ^ row_hashes(np.asarray(columns[name]))
    return h


class Unique(Check):
    """No value (or, with ``columns``, no combination of rows) appears twice."""

    kind = "unique"
    dimension = "integrity"
    columns: tuple[str, ...] = ()

    def start(self):
        return {"rows": 0, "hashes": []}

    def update(self, state, chunk):
        names = self.columns or (self.column,)
        h = combined_row_hashes(chunk, names)
        complete = np.ones(len(h), bool)
        for name in names:
            values = chunk[name]
            if values.dtype.kind == "f":  # incomplete rows are completeness's business, not repeats
                complete &= np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        state["hashes"].append(h[complete])
        state["rows"] += int(complete.sum())

    def finish(self, state):
        hashes = np.concatenate(state["hashes"]) if state["hashes"] else np.zeros(0, np.uint64)
        state["failing"] = int(len(hashes) - len(np.unique(hashes)))
        out = super().finish(state)
        return replace(out, observed=f"{state['failing']} repeated rows of {state['rows']}")

    def expectation(self):
        what = " + ".join(self.columns) if self.columns else self.column
        return f"no repeated {what}{_mostly(self.mostly)}"


class References(Check):
    """Every value of ``column`` appears in column ``target`` (feedback refers to a known request)."""

    kind = "references"
    dimension = "integrity"
    target: str = ""

    def start(self):
        return {"rows": 0, "refs": [], "known": []}

    def update(self, state, chunk):
        state["refs"].append(row_hashes(self._column(chunk)))
        state["known"].append(row_hashes(chunk[self.target]))
        state["rows"] += len(state["refs"][-1])

    def finish(self, state):
        refs = np.concatenate(state["refs"]) if state["refs"] else np.zeros(0, np.uint64)
        known = np.concatenate(state["known"]) if state["known"] else np.zeros(0, np.uint64)
        state["failing"] = int((~np.isin(refs, known)).sum())
        return super().finish(state)

    def expectation(self):
        return f"every {self.column} is a known {self.target}"


# -- accuracy ----------------------------------------------------------------------------------------

class LabelDistribution(Check):
    """The share of each class within bounds (a reference's shares, with a tolerance)."""

    kind = "label_distribution"
    dimension = "accuracy"
    shares: dict[str, tuple[float, float]] = field(default_factory=dict)

    def start(self):
        return {"rows": 0, "counts": {}}

    def update(self, state, chunk):
        values, counts = np.unique(np.asarray([str(v) for v in self._column(chunk).ravel()]), return_counts=True)
        for v, c in zip(values, counts):
            state["counts"][v] = state["counts"].get(v, 0) + int(c)
        state["rows"] += int(counts.sum())

    def finish(self, state):
        n = max(state["rows"], 1)
        observed = {k: state["counts"].get(k, 0) / n for k in self.shares}
        off = {k: round(v, 4) for k, v in observed.items() if not self.shares[k][0] <= v <= self.shares[k][1]}
        return self._outcome(not off, f"out of bounds: {off}" if off else "every class within its bounds",
                             "class shares within the reference's bounds")


class MatchesReference(Check):
    """Values agree with a trusted reference by key (labels against the labelling team's)."""

    kind = "matches_reference"
    dimension = "accuracy"
    key: str = ""
    reference: str = ""  # an .npz or Parquet file holding ``key`` and ``column``
    reference_column: str = ""

    def start(self):
        table = open_table(self.reference)
        keys, values = [], []
        for chunk in table.chunks():
            keys.append(row_hashes(chunk[self.key]))
            values.append(row_hashes(chunk[self.reference_column or self.column]))
        keys, values = np.concatenate(keys), np.concatenate(values)
        order = np.argsort(keys)
        return {"rows": 0, "failing": 0, "keys": keys[order], "values": values[order]}

    def failing(self, values, chunk):
        raise NotImplementedError

    def update(self, state, chunk):
        keys, values = row_hashes(chunk[self.key]), row_hashes(self._column(chunk))
        pos = np.clip(np.searchsorted(state["keys"], keys), 0, max(len(state["keys"]) - 1, 0))
        known = state["keys"][pos] == keys
        state["failing"] += int((known & (state["values"][pos] != values)).sum())
        state["rows"] += int(known.sum())

    def expectation(self):
        return f"{self.column} equals the reference's by {self.key}{_mostly(self.mostly)}"


class MeanWithin(Check):
    kind = "mean_within"
    dimension = "accuracy"
    min: Optional[float] = None
    max: Optional[float] = None

    def start(self):
        return {"sum": 0.0, "n": 0}

    def update(self, state, chunk):
        values = np.asarray(self._column(chunk), dtype=np.float64)
        state["sum"] += float(np.nansum(values))
        state["n"] += int(np.isfinite(values).sum())

    def finish(self, state):
        mean = state["sum"] / state["n"] if state["n"] else float("nan")
        ok = (self.min is None or mean >= self.min) and (self.max is None or mean <= self.max)
        return self._outcome(ok, round(mean, 6), f"mean within [{self.min}, {self.max}]")


# -- suites --------------------------------------------------------------------------------------

class Suite(Document):
    name: str
    checks: tuple[Check, ...]

    @classmethod
    def parse(cls, data: dict, origin: str = "suite") -> "Suite":
        if not isinstance(data, dict) or not isinstance(data.get("expect"), list):
            raise EdgekitError(f"{origin}: a suite is a table with a list 'expect' of expectations",
                               "make one with: edgekit test expect suggest --data ref.npz")
        checks = []
        for i, raw in enumerate(data["expect"]):
            if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
                raise EdgekitError(f"{origin}: expect[{i}].kind must be one of {', '.join(sorted(KINDS))}")
            fields = {k: v for k, v in raw.items() if k not in ("kind", "dimension")}
            try:
                checks.append(from_dict(KINDS[raw["kind"]], fields, f"expect[{i}]"))
            except SchemaError as exc:
                raise EdgekitError(f"{origin}: {exc}") from None
        return cls(str(data.get("name", origin)), tuple(checks))

    @classmethod
    def load(cls, path: str | Path) -> "Suite":
        path = Path(path)
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise EdgekitError(f"suite {path} is not readable JSON: {exc}") from None
        else:
            data = read_toml(path, "suite", "make one with: edgekit test expect suggest --data ref.npz")
        return cls.parse(data, str(path))

    def to_dict(self) -> dict:
        return {"name": self.name, "expect": [{**c.to_dict(), "dimension": c.dimension} for c in self.checks]}

    def on_columns(self, columns) -> tuple["Suite", list[str]]:
        """This suite for data that carries only ``columns`` (the loop's data sets hold the model's
        inputs and labels, not a feed's ids): (the checks that apply, the ones left out, said)."""
        columns, kept, left = set(columns), [], []
        for check in self.checks:
            if isinstance(check, Present):
                present = tuple(c for c in check.columns if c in columns)
                if present != check.columns:
                    left.append(f"present: {', '.join(c for c in check.columns if c not in columns)}")
                    check = replace(check, columns=present) if present else None
            elif not check.needs() <= columns:
                left.append(f"{check.kind} on {', '.join(sorted(check.needs() - columns))}")
                check = None
            if check is not None:
                kept.append(check)
        return Suite(self.name, tuple(kept)), left

    def to_toml(self) -> str:
        lines = [f"# edgekit expectation suite: {self.name}", f"name = {json.dumps(self.name)}", ""]
        for check in sorted(self.checks, key=lambda c: DIMENSIONS.index(c.dimension)):
            lines.append(f"[[expect]]  # {check.dimension}")
            for key, value in check.to_dict().items():
                if isinstance(value, dict):
                    inner = ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items())
                    lines.append(f"{key} = {{ {inner} }}")
                else:
                    lines.append(f"{key} = {_toml(value)}")
            lines.append("")
        return "\n".join(lines)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf"
    return json.dumps(value)


class SuiteResult(Document):
    suite: str
    data: str
    rows: int
    outcomes: tuple[Outcome, ...]

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success]

    def to_dict(self) -> dict:
        return {"suite": self.suite, "data": self.data, "rows": self.rows, "success": self.success,
                "outcomes": [to_dict(o) | {"failing_share": o.failing_share} for o in self.outcomes]}

    def markdown(self) -> str:
        lines = [f"# Expectations: {self.suite}", "", f"Data: `{self.data}`, {self.rows} rows. "
                 f"**{'PASS' if self.success else 'FAIL'}**: {len(self.outcomes) - len(self.failed())} of "
                 f"{len(self.outcomes)} expectations met.", "",
                 "| dimension | expectation | column | expected | observed | result |", "|---|---|---|---|---|---|"]
        for o in sorted(self.outcomes, key=lambda o: (o.success, DIMENSIONS.index(o.dimension))):
            lines.append(f"| {o.dimension} | {o.kind} | {o.column or '-'} | {o.expected} | {o.observed} | "
                         f"{'pass' if o.success else '**FAIL**'} |")
        return "\n".join(lines) + "\n"


def run_suite(suite: Suite, data, chunk: int = 65536) -> SuiteResult:
    """Every check of ``suite`` over ``data`` (a path, or any ``tables.Table``: monitoring passes
    the logged inputs of a window) in one pass, chunk by chunk."""

    table = data if isinstance(data, Table) else open_table(data, chunk)
    states = [c.start() for c in suite.checks]
    rows = 0
    for part in table.chunks():
        rows += len(next(iter(part.values()))) if part else 0
        for check, state in zip(suite.checks, states):
            check.update(state, part)
    return SuiteResult(suite.name, str(table.path), rows, tuple(c.finish(s) for c, s in zip(suite.checks, states)))
