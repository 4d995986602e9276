"""The collector's HTTP API (Starlette on uvicorn): POST /v1/logs, GET /v1/health, GET /metrics
(Prometheus: the monitoring signals per model, version and device group, and ingest counters),
and fleet updates: GET /v1/assignment, GET /v1/bundles/{sha256} (range requests), POST
/v1/device-state. Every device route takes the device's bearer token."""

from __future__ import annotations

from .._asgi import BodyError, read_body
from .db import Database, device_for
from .ingest import BatchError, KeyConflict, ingest

MAX_BODY = 16 * 1024 * 1024  # compressed
MAX_INFLATED = 128 * 1024 * 1024  # a gzip bomb stops here


def create_app(db: Database, max_body: int = MAX_BODY, max_inflated: int = MAX_INFLATED,
               metrics_window_s: float = 3600.0, store=None):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    counters = registry = None
    try:
        from prometheus_client import CollectorRegistry, generate_latest

        from ..monitor.metrics import IngestCounters, SignalCollector

        registry = CollectorRegistry()
        counters = IngestCounters(registry)
        registry.register(SignalCollector(db, window_s=metrics_window_s))
    except ImportError:  # metrics need the monitor extra; ingest works without
        pass

    def error(status: int, message: str) -> JSONResponse:
        if counters is not None:
            counters.refused(status)
        return JSONResponse({"error": message}, status_code=status)

    async def metrics(request: Request):
        if registry is None:
            return error(404, "metrics need prometheus-client: pip install 'edgekit[monitor]'")
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def health(request: Request):
        return JSONResponse({"ok": True})

    async def logs(request: Request):
        device = await authenticated(request)
        if device is None:
            return error(401, "unknown or revoked device token")
        try:
            raw = await read_body(request, max_body, max_inflated)
        except BodyError as exc:
            return error(exc.status, f"batch refused: {exc.message}")
        key = request.headers.get("idempotency-key", "")
        try:
            result, replayed = await run_in_threadpool(ingest, db, device, key, raw)
        except BatchError as exc:
            return error(400, str(exc))
        except KeyConflict as exc:
            return error(422, str(exc))
        if counters is not None:
            counters.accepted(result, replayed)
        return JSONResponse(result, status_code=200, headers={"Idempotent-Replayed": "true"} if replayed else {})

    async def authenticated(request: Request):
        header = request.headers.get("authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        return await run_in_threadpool(device_for, db, token) if token else None

    async def assignment(request: Request):
        """GET /v1/assignment?model=M: the version this device should run (and shadow)."""
        from .releases import assignment as assign

        device = await authenticated(request)
        if device is None:
            return error(401, "unknown or revoked device token")
        model = request.query_params.get("model", "")
        if not model:
            return error(400, "name the model: /v1/assignment?model=NAME")
        found = await run_in_threadpool(assign, db, device, model)
        return JSONResponse(found.to_dict())

    async def bundle(request: Request):
        """GET /v1/bundles/{sha256}: a published bundle, with HTTP range requests (resumable)."""
        from starlette.responses import FileResponse

        if await authenticated(request) is None:
            return error(401, "unknown or revoked device token")
        sha = request.path_params["sha256"]
        if store is None or len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
            return error(404, "no such bundle")
        path = store / f"{sha}.ekb"
        if not path.is_file():
            return error(404, "no such bundle")
        return FileResponse(path, media_type="application/octet-stream")

    async def device_state(request: Request):
        """POST /v1/device-state {model, version, state: running|failed|shadow, reason}."""
        from ..errors import EdgekitError
        from ..sync.fleet import MAX_STATE_BODY, DeviceState, WireError
        from .releases import NotAssigned, report_device

        device = await authenticated(request)
        if device is None:
            return error(401, "unknown or revoked device token")
        try:
            report = DeviceState.parse(await read_body(request, MAX_STATE_BODY))
            await run_in_threadpool(report_device, db, device, report.model, report.version, report.state,
                                    report.reason)
        except BodyError as exc:
            return error(exc.status, f"device state refused: {exc.message}")
        except WireError as exc:
            return error(400, f"bad device state: {exc}; send {{model, version, state, reason}}")
        except NotAssigned as exc:
            return error(409, str(exc))
        except EdgekitError as exc:
            return error(400, str(exc))
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/v1/health", health), Route("/v1/logs", logs, methods=["POST"]),
                             Route("/v1/assignment", assignment), Route("/v1/bundles/{sha256}", bundle),
                             Route("/v1/device-state", device_state, methods=["POST"]),
                             Route("/metrics", metrics)])


def judge_canaries(db: Database, interval_s: float, stop) -> None:
    """Every ``interval_s``, the canary decision for each model in canary: a version that failed
    on devices, or is worse, is rolled back without anyone running a command."""
    import logging

    from ..errors import EdgekitError
    from .canary import decide

    log = logging.getLogger("edgekit.collector")
    while not stop.wait(interval_s):
        try:
            with db.read() as tx:
                models = [r[0] for r in tx.all("SELECT model FROM rollouts WHERE state = 'canary'")]
            for model in models:
                verdict = decide(db, model)
                if verdict is not None and verdict.decision != "wait":
                    log.warning("%s: %s - %s", model, verdict.decision, verdict.reason)
        except (EdgekitError, ImportError, OSError) as exc:  # retried at the next interval
            log.warning("canary decision: %s", exc)


def serve(db_url: str, host: str, port: int, max_body: int = MAX_BODY, certfile: str | None = None,
          keyfile: str | None = None, metrics_window_s: float = 3600.0, store=None, decide_every_s: float = 0.0) -> None:
    import threading

    import uvicorn

    database = Database(db_url)
    app = create_app(database, max_body=max_body, metrics_window_s=metrics_window_s, store=store)
    if decide_every_s > 0:
        threading.Thread(target=judge_canaries, args=(database, decide_every_s, threading.Event()),
                         name="edgekit-canary", daemon=True).start()
    uvicorn.run(app, host=host, port=port, log_level="warning", ssl_certfile=certfile, ssl_keyfile=keyfile)

