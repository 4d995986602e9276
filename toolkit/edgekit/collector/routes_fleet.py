"""The collector's fleet-update routes: GET /v1/assignment, GET /v1/bundles/{sha256} (range
requests: an interrupted download resumes), POST /v1/device-state."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from .._asgi import BodyError, read_body
from ..errors import EdgekitError
from ..sync.fleet import MAX_STATE_BODY, DeviceState, WireError
from .api import Api
from .releases import NotAssigned, assignment, report_device


def routes(api: Api) -> list[Route]:
    async def assigned(request: Request):
        """GET /v1/assignment?model=M: the version this device should run (and shadow)."""
        device = await api.device(request)
        if device is None:
            return api.error(401, "unknown or revoked device token")
        model = request.query_params.get("model", "")
        if not model:
            return api.error(400, "name the model: /v1/assignment?model=NAME")
        found = await run_in_threadpool(assignment, api.db, device, model)
        return JSONResponse(found.to_dict())

    async def bundle(request: Request):
        """GET /v1/bundles/{sha256}: a published bundle."""
        if await api.device(request) is None:
            return api.error(401, "unknown or revoked device token")
        sha = request.path_params["sha256"]
        if api.store is None or len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
            return api.error(404, "no such bundle")
        path = api.store / f"{sha}.ekb"
        if not path.is_file():
            return api.error(404, "no such bundle")
        return FileResponse(path, media_type="application/octet-stream")

    async def device_state(request: Request):
        """POST /v1/device-state {model, version, state: running|failed|shadow, reason}."""
        device = await api.device(request)
        if device is None:
            return api.error(401, "unknown or revoked device token")
        try:
            report = DeviceState.parse(await read_body(request, MAX_STATE_BODY))
            await run_in_threadpool(report_device, api.db, device, report.model, report.version, report.state,
                                    report.reason)
        except BodyError as exc:
            return api.error(exc.status, f"device state refused: {exc.message}")
        except WireError as exc:
            return api.error(400, f"bad device state: {exc}; send {{model, version, state, reason}}")
        except NotAssigned as exc:
            return api.error(409, str(exc))
        except EdgekitError as exc:
            return api.error(400, str(exc))
        return JSONResponse({"ok": True})

    return [Route("/v1/assignment", assigned), Route("/v1/bundles/{sha256}", bundle),
            Route("/v1/device-state", device_state, methods=["POST"])]
