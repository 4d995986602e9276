"""The loop's state in the collector database: runs, decisions, the labelling queue and the lock.

A run's ``step`` is the last step whose outputs are on disk; ``outputs`` holds what each finished
step returned. Status: running, waiting (for labels), released, rejected, stopped (nothing to
learn from), failed (an error; the next ``loop run`` retries the step).
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

from .._io import to_json
from ..errors import EdgekitError

OPEN = ("running", "waiting", "failed")
LEASE_S = 3600.0


@dataclass
class Run:
    run_id: str
    model: str
    started: float
    updated: float
    step: str
    status: str
    trigger: str
    reason: str
    directory: str
    outputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


_COLUMNS = "run_id, model, started, updated, step, status, trigger_name, reason, directory, outputs"


def _run(row) -> Run:
    return Run(*row[:9], json.loads(row[9]))


def runs(db, model: str, limit: int = 50, statuses: tuple[str, ...] = ()) -> list[Run]:
    """The model's runs, newest first (only those in ``statuses`` when given)."""
    where, params = "model = ?", [model]
    if statuses:
        where += f" AND status IN ({', '.join('?' * len(statuses))})"
        params += list(statuses)
    with db.read() as tx:
        rows = tx.all(f"SELECT {_COLUMNS} FROM loop_runs WHERE {where} ORDER BY started DESC LIMIT ?", (*params, limit))
    return [_run(r) for r in rows]


def last_run(db, model: str, statuses: tuple[str, ...] = ()) -> Optional[Run]:
    found = runs(db, model, 1, statuses)
    return found[0] if found else None


def open_run(db, model: str) -> Optional[Run]:
    return last_run(db, model, OPEN)


def runs_since(db, model: str, since: float) -> int:
    with db.read() as tx:
        return tx.one("SELECT COUNT(*) FROM loop_runs WHERE model = ? AND started >= ?", (model, since))[0]


def create_run(db, run: Run) -> None:
    with db.connect() as tx:
        tx.execute(f"INSERT INTO loop_runs ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                   (run.run_id, run.model, run.started, run.updated, run.step, run.status, run.trigger, run.reason,
                    run.directory, json.dumps(run.outputs)))


def save_run(db, run: Run) -> None:
    run.updated = time.time()
    with db.connect() as tx:
        tx.execute("UPDATE loop_runs SET updated = ?, step = ?, status = ?, reason = ?, outputs = ? WHERE run_id = ?",
                   (run.updated, run.step, run.status, run.reason, to_json(run.outputs), run.run_id))


def record_decision(db, model: str, now: float, retrain: bool, trigger: str, reason: str, numbers: dict,
                    run_id: Optional[str] = None) -> None:
    with db.connect() as tx:
        tx.execute("INSERT INTO loop_decisions (model, time, retrain, trigger_name, reason, numbers, run_id) "
                   "VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                   (model, now, int(retrain), trigger, reason, to_json(numbers), run_id))


def decisions(db, model: str, limit: int = 50) -> list[dict]:
    with db.read() as tx:
        rows = tx.all("SELECT time, retrain, trigger_name, reason, numbers, run_id FROM loop_decisions WHERE model = ? "
                      "ORDER BY time DESC LIMIT ?", (model, limit))
    return [{"time": r[0], "retrain": bool(r[1]), "trigger": r[2], "reason": r[3], "numbers": json.loads(r[4]),
             "run_id": r[5]} for r in rows]


def queued_keys(db, model: str) -> frozenset:
    with db.read() as tx:
        rows = tx.all("SELECT device, request_id, row_index FROM loop_queue WHERE model = ?", (model,))
    return frozenset((d, r, int(i)) for d, r, i in rows)


def add_to_queue(db, model: str, run_id: str, keys: list[tuple[str, str, int]], now: float) -> None:
    with db.connect() as tx:
        tx.executemany("INSERT INTO loop_queue (model, device, request_id, row_index, run_id, queued) "
                       "VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                       [(model, d, r, int(i), run_id, now) for d, r, i in keys])


def labelled_in_queue(db, model: str, run_id: str) -> tuple[int, int]:
    """(queued by this run, of them labelled since)."""
    from ..collector.db import LABEL_STORE

    with db.read() as tx:
        total = tx.one("SELECT COUNT(*) FROM loop_queue WHERE model = ? AND run_id = ?", (model, run_id))[0]
        done = tx.one("SELECT COUNT(*) FROM loop_queue q WHERE q.model = ? AND q.run_id = ? AND EXISTS (SELECT 1 FROM "
                      "feedback f WHERE f.device = q.device AND f.request_id = q.request_id AND f.store = ?)",
                      (model, run_id, LABEL_STORE))[0]
    return total, done


def _alive(owner: str) -> bool:
    """A holder on this host that no longer runs (killed, crashed) holds nothing; one elsewhere
    holds its lease until it runs out."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def loop_lock(db, model: str, lease_s: float = LEASE_S):
    """One loop per model. On PostgreSQL (loop daemons on several machines) an advisory lock,
    which PostgreSQL frees the moment its holder dies; on SQLite (one machine) a lease row, taken
    over when its holder's process is gone."""
    if db.kind == "postgresql":
        from .._locks import exclusive, holder

        with exclusive(db, f"edgekit-loop:{model}") as mine:
            if not mine:
                who = holder(db, f"edgekit-loop:{model}") or {}
                raise EdgekitError(f"another loop runs model {model!r} (PostgreSQL backend {who.get('pid', '?')} from "
                                   f"{who.get('client') or 'a local socket'}, since {who.get('since', '?')})",
                                   "one loop per model: stop the other one, or let it finish its pass")
            yield
        return
    from .._locks import process_name

    owner = process_name()
    now = time.time()
    with db.connect() as tx:
        row = tx.one("SELECT owner, expires FROM loop_lock WHERE model = ?", (model,))
        if row is not None and row[0] != owner and row[1] > now and _alive(row[0]):
            raise EdgekitError(f"another loop runs model {model!r} ({row[0]}, lease until "
                               f"{time.strftime('%H:%M:%S', time.localtime(row[1]))})",
                               "one loop per model: stop the other one, or wait for its lease to run out")
        tx.execute("DELETE FROM loop_lock WHERE model = ?", (model,))
        tx.execute("INSERT INTO loop_lock (model, owner, expires) VALUES (?, ?, ?)", (model, owner, now + lease_s))
    try:
        yield
    finally:
        with db.connect() as tx:
            tx.execute("DELETE FROM loop_lock WHERE model = ? AND owner = ?", (model, owner))
