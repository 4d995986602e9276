"""The collector's log routes: POST /v1/logs (a device's batch), GET /v1/health, GET /metrics."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._asgi import BodyError, read_body
from .api import Api
from .ingest import BatchError, KeyConflict, ingest


def routes(api: Api) -> list[Route]:
    async def health(request: Request):
        return JSONResponse({"ok": True})

    async def logs(request: Request):
        device = await api.device(request)
        if device is None:
            return api.error(401, "unknown or revoked device token")
        try:
            raw = await read_body(request, api.max_body, api.max_inflated)
        except BodyError as exc:
            return api.error(exc.status, f"batch refused: {exc.message}")
        key = request.headers.get("idempotency-key", "")
        try:
            result, replayed = await run_in_threadpool(ingest, api.db, device, key, raw)
        except BatchError as exc:
            return api.error(400, str(exc))
        except KeyConflict as exc:
            return api.error(422, str(exc))
        if api.counters is not None:
            api.counters.accepted(result, replayed)
        return JSONResponse(result, status_code=200, headers={"Idempotent-Replayed": "true"} if replayed else {})

    async def metrics(request: Request):
        if api.registry is None:
            return api.error(404, "metrics need prometheus-client: pip install 'edgekit[monitor]'")
        from prometheus_client import generate_latest

        body = await run_in_threadpool(generate_latest, api.registry)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return [Route("/v1/health", health), Route("/v1/logs", logs, methods=["POST"]), Route("/metrics", metrics)]
