"""The raw inputs logged in a window, as a table the expectation engine reads chunk by chunk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from ..sync.record import decode_array
from ..tables import Table

_FILTER = {"version": "r.version = ?", "group": "d.grp = ?", "device": "r.device = ?"}


class LoggedInputs(Table):
    """At most ``limit`` of the most recent records with raw inputs in [start, end) of ``model``
    (and of one scope); rows of other shapes than the first are left out (another version)."""

    def __init__(self, db, model: str, start: float, end: float, scope: dict, limit: int, chunk: int = 2000):
        self.db, self._limit = db, limit
        where = " AND ".join(["r.model = ?", "r.time >= ?", "r.time < ?", "r.inputs IS NOT NULL"] +
                             [_FILTER[k] for k in scope])
        self._sql = (f"SELECT r.inputs FROM records r JOIN devices d ON d.name = r.device WHERE {where} "
                     "ORDER BY r.time DESC LIMIT ?")
        self._params = (model, start, end, *scope.values(), limit)
        with db.read() as tx:  # whether there is any: run_suite counts the rows as it reads them
            count = tx.one(f"SELECT COUNT(*) FROM (SELECT 1 FROM records r JOIN devices d ON d.name = r.device "
                           f"WHERE {where} LIMIT 1) AS x", self._params[:-1])[0]
        label = ", ".join(f"{k}={v}" for k, v in scope.items()) or "all"
        super().__init__(Path(f"{db.url}#{model}[{label}]"), count, [], chunk)

    def _chunks(self) -> Iterator[dict[str, np.ndarray]]:
        signature = None
        with self.db.read() as tx:
            for rows in tx.stream(self._sql, self._params, self.chunk):
                parts: dict[str, list] = {}
                for (text,) in rows:
                    try:
                        arrays = {k: decode_array(v) for k, v in json.loads(text).items()}
                    except (ValueError, TypeError, KeyError):
                        continue
                    sig = tuple((k, a.dtype.str, a.shape[1:]) for k, a in arrays.items())
                    signature = signature or sig
                    if sig != signature:
                        continue
                    for k, a in arrays.items():
                        parts.setdefault(k, []).append(a)
                if parts:
                    yield {k: np.concatenate(v) for k, v in parts.items()}
