"""The collector's HTTP API (Starlette on uvicorn): POST /v1/logs, GET /v1/health, GET /metrics
(Prometheus: the monitoring signals per model, version and device group, and ingest counters),
and fleet updates: GET /v1/assignment, GET /v1/bundles/{sha256} (range requests), POST
/v1/device-state. Every device route takes the device's bearer token."""

from __future__ import annotations

from .api import MAX_BODY, MAX_INFLATED, Api
from .db import Database
from ..errors import EdgekitError
from . import routes_fleet, routes_logs


def create_app(db: Database, max_body: int = MAX_BODY, max_inflated: int = MAX_INFLATED,
               metrics_window_s: float = 3600.0, store=None):
    """The API over ``db``: the log routes and the fleet-update routes (one module each)."""
    from starlette.applications import Starlette

    api = Api(db, max_body, max_inflated, store)
    try:
        from prometheus_client import CollectorRegistry

        from ..monitor.metrics import IngestCounters, SignalCollector

        api.registry = CollectorRegistry()
        api.counters = IngestCounters(api.registry)
        api.registry.register(SignalCollector(db, window_s=metrics_window_s))
    except ImportError:  # metrics need the monitor extra; ingest works without
        pass
    app = Starlette(routes=routes_logs.routes(api) + routes_fleet.routes(api))
    app.state.api = api
    return app


def judge_canaries(db: Database, interval_s: float, stop, replica: str = "", counters=None) -> None:
    """Every ``interval_s``, the canary decision for each model in canary: a version that failed
    on devices, or is worse, is rolled back without anyone running a command. ``counters``
    (monitor.metrics.IngestCounters) count the intervals this replica judged."""
    import logging
    import time

    from .._locks import process_name

    log = logging.getLogger("edgekit.collector")
    while not stop.wait(interval_s):
        try:
            decided = tick(db, interval_s, replica or process_name(), time.time()) is not None
            if counters is not None:
                counters.ticked(decided)
        except (EdgekitError, ImportError, OSError) as exc:  # retried at the next interval
            log.warning("canary decision: %s", exc)


def tick(db: Database, interval_s: float, replica: str, now: float) -> list | None:
    """One interval's canary decisions, taken by exactly one of the replicas over the database:
    the one holding the advisory lock (so two never judge at once and promote twice) that first
    claims the interval's row in collector_ticks (so a replica whose timer fires later in the same
    interval does nothing). Returns the verdicts, None where another replica had them."""
    import json
    import logging

    from .._locks import exclusive
    from .canary import decide

    slot = int(now // interval_s)
    with exclusive(db, "edgekit-canary") as mine:
        if not mine:
            return None
        with db.connect() as tx:
            claimed = tx.execute("INSERT INTO collector_ticks (task, slot, replica, time, detail) VALUES "
                                 "('canary', ?, ?, ?, '[]') ON CONFLICT DO NOTHING", (slot, replica, now)).rowcount
            if claimed != 1:
                return None
            models = [r[0] for r in tx.all("SELECT model FROM rollouts WHERE state = 'canary'")]
        verdicts = []
        for model in models:
            verdict = decide(db, model)
            if verdict is not None:
                verdicts.append({"model": model, "decision": verdict.decision, "reason": verdict.reason})
                if verdict.decision != "wait":
                    logging.getLogger("edgekit.collector").warning("%s: %s - %s", model, verdict.decision,
                                                                   verdict.reason)
        with db.connect() as tx:
            tx.execute("UPDATE collector_ticks SET detail = ? WHERE task = 'canary' AND slot = ?",
                       (json.dumps(verdicts), slot))
    return verdicts


def keep_rolled_up(db: Database, interval_s: float, stop) -> None:
    """Every ``interval_s``, the hours that ended are rolled up (edgekit.monitor.rollups) by the one
    replica holding the advisory lock: the others would only recount the same hours."""
    import logging

    from .._locks import exclusive
    from ..monitor.rollups import roll

    log = logging.getLogger("edgekit.collector")
    while not stop.wait(interval_s):
        try:
            with exclusive(db, "edgekit-rollup") as mine:
                if mine:
                    done = roll(db)
                    if done["marks"]:
                        log.info("rolled up %d device hours in %.1f s", done["marks"], done["seconds"])
        except (EdgekitError, OSError) as exc:  # retried at the next interval
            log.warning("rollup: %s", exc)
        except Exception as exc:  # a database error (a failover, a lock timeout): the next interval retries
            log.warning("rollup: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def serve(db_url: str, host: str, port: int, max_body: int = MAX_BODY, certfile: str | None = None,
          keyfile: str | None = None, metrics_window_s: float = 3600.0, store=None, decide_every_s: float = 0.0,
          rollup_every_s: float = 0.0) -> None:
    import threading

    import uvicorn

    database = Database(db_url)
    app = create_app(database, max_body=max_body, metrics_window_s=metrics_window_s, store=store)
    if decide_every_s > 0:
        threading.Thread(target=judge_canaries, args=(database, decide_every_s, threading.Event(), "",
                                                      app.state.api.counters),
                         name="edgekit-canary", daemon=True).start()
    if rollup_every_s > 0:
        threading.Thread(target=keep_rolled_up, args=(database, rollup_every_s, threading.Event()),
                         name="edgekit-rollup", daemon=True).start()
    uvicorn.run(app, host=host, port=port, log_level="warning", ssl_certfile=certfile, ssl_keyfile=keyfile)

